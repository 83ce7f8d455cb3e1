"""HumanEvalPack's languages as bigcode-evaluation-harness handles them (`tasks/humanevalpack.py`).

Per language: its name in prompts ("Write functional code in Java ..."), its stop words (the harness's
`LANGUAGE_TO_STOP_WORDS`, from CodeGeeX, plus StarCoder's end of text), how a completion is cut
(`remove_last_block`: Python at the first line back at column 0, Java where the method's and the
class's braces close) and the program that is executed for a sample (`code_eval_octopack`'s assembly).
`runner` names the sandbox that executes it. Registered: the two languages Astraios evaluated (its
scripts loop over python and java); JavaScript, C++, Go and Rust would each need their own runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sweeper.core.registry import Registry
from sweeper.evals.problems import harness_program

END_OF_TEXT = "<|endoftext|>"  # the harness appends it to every language's stop words


@dataclass(frozen=True)
class Language:
    name: str  # HumanEvalPack's config name: python, java, js, cpp, go, rust
    display: str  # as prompts name it (LANGUAGE_TO_NAME)
    task_prefix: str  # of its task ids: "Java/0"
    stop: tuple[str, ...]
    runner: Literal["python", "jvm"]  # the sandbox that executes its programs
    open_braces: int = 1  # braces the prompt leaves open (Java: the class and the method)
    timeout_s: float = 10.0  # the harness's LANGUAGE_TO_TIMEOUT

    def finish(self, prefix: str, completion: str) -> str:
        """The sample a completion makes, as the harness's postprocess_generation: the prompt's code
        (right-stripped) + the completion cut by remove_last_block."""
        if self.name == "python":
            return prefix.rstrip() + _python_block(completion)
        return prefix.rstrip() + self._braces_block(completion.rstrip())

    def _braces_block(self, code: str) -> str:
        for word in self.stop:
            code = code.split(word)[0]
        depth = self.open_braces
        for index, char in enumerate(code):
            depth += {"{": 1, "}": -1}.get(char, 0)
            if depth == 0:
                return code[: index + 1]
        # The braces never close: the harness trims Java at a main method, then after the last brace, and
        # closes the class when exactly one brace is left open.
        main = code.find("public static void main")
        if main != -1:
            code = code[:main] + "}"
        if "}" in code:
            code = code[: code.rfind("}")] + "}"
        if code.count("{") - 1 == code.count("}"):
            code += "\n}"
        return code

    def executable(self, sample: str, test: str) -> str:
        """The program code_eval_octopack runs for one sample and the problem's test."""
        if self.name == "python":
            return harness_program(sample, test)
        return sample.replace("public class Main {\n    }", "").strip() + "\n" + test  # Java


def _python_block(completion: str) -> str:
    """The harness's remove_last_block for Python: cut at the first stop word, then at the first line
    back at column 0 (the function is over)."""
    for word in PYTHON_STOP:
        completion = completion.split(word)[0]
    lines = completion.split("\n")
    for index, line in enumerate(lines):
        if line.strip() and line[0] not in " \t":
            return "\n".join(lines[:index])
    return "\n".join(lines)


PYTHON_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\nassert", END_OF_TEXT)

LANGUAGES: Registry[Language] = Registry("language")
LANGUAGES.add("python", Language("python", "Python", "Python", PYTHON_STOP, runner="python"))
LANGUAGES.add("java", Language("java", "Java", "Java", (END_OF_TEXT,), runner="jvm", open_braces=2))
