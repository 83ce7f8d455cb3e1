"""The report's check of Astraios' findings: verdicts computed from the study, not written in."""

import json

import polars as pl
import pytest
from test_analysis_sweep import SCALES, _shift_loss, make_sweep


def findings_table(markdown: str) -> dict[str, tuple[str, str]]:
    """The findings table of a report: claim's first words -> (verdict, evidence)."""
    section = markdown.split("## Astraios' findings, checked on this study", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ") and "**" in line]
    return {claim.split(" (")[0]: (verdict.strip("* "), evidence) for claim, verdict, evidence in rows}


def report(run_cli, folder, out) -> str:
    code, _, err = run_cli("report", str(folder), "--bootstrap", "100", "--out", str(out))
    assert code == 0, err
    return (out / "report.md").read_text()


@pytest.fixture(scope="module")
def paper_like(tmp_path_factory):
    """A sweep whose true laws agree with the paper: FFT lowest everywhere, LoRA cheap and good, pass@1
    following the loss."""
    return make_sweep(tmp_path_factory.mktemp("paper") / "micro")


def test_a_study_that_agrees_with_the_paper_reproduces_its_findings(run_cli, paper_like, tmp_path):
    markdown = report(run_cli, paper_like, tmp_path)
    findings = findings_table(markdown)
    assert findings["FFT generally leads to the best performance across all scales"][0] == "reproduces"
    assert "at 4 of 4 scales" in findings["FFT generally leads to the best performance across all scales"][1]
    assert findings["LoRA usually offers the most favourable trade-off between cost and performance"][0] == "reproduces"
    assert findings["The tuning effectiveness observed in small models generalises well to larger models"][0] == \
        "reproduces"
    indicator = findings["The validation loss of instruction tuning is a reliable indicator of downstream performance"]
    assert indicator[0] == "reproduces" and "humanevalsynthesize-python pass@1: Spearman -" in indicator[1]
    # every true law here shares one exponent: the gaps between methods do not change with scale
    assert findings["PEFT methods differ in their efficacy depending on the model scale"][0] == "contradicts"
    # the only security score is flat: nothing to test
    assert findings["Larger models tend to show reduced robustness and less security"][0] == "cannot test here"
    assert "one for every method (1e-04)" in markdown or "one for every method (0.0001)" in markdown
    # on the first screen: before the data section and the parameter tables
    assert markdown.index("Astraios' findings") < markdown.index("## Data")


def test_verdicts_follow_the_data_when_fft_loses_everywhere(run_cli, tmp_path):
    folder = make_sweep(tmp_path / "sweep" / "micro")
    for scale in SCALES:
        _shift_loss(folder, "fft", scale, 0.5)
    findings = findings_table(report(run_cli, folder, tmp_path / "out"))
    verdict, evidence = findings["FFT generally leads to the best performance across all scales"]
    assert verdict == "contradicts" and "at 0 of 4 scales" in evidence


def test_learning_rates_that_differ_by_method_and_data_like_pretraining_are_called_out(run_cli, tmp_path):
    folder = make_sweep(tmp_path / "sweep" / "micro")
    ledger = pl.read_parquet(folder / "cells.parquet")
    ledger.with_columns(pl.when(pl.col("method") == "ia3").then(1e-2).otherwise(pl.col("lr")).alias("lr")) \
        .write_parquet(folder / "cells.parquet")
    (folder / "manifest.json").write_text(json.dumps(
        {"space": {"name": "micro", "ladder": "micro", "data": {"source": "local-code"}}, "plan": {}}))
    markdown = report(run_cli, folder, tmp_path / "out")
    assert "Learning rates differ by method" in markdown and "ia3 0.01" in markdown
    assert "close to continued pretraining" in markdown
    (folder / "manifest.json").write_text(json.dumps({"space": {
        "name": "micro", "ladder": "micro", "data": {"source": "local-code", "packages": ["rich"]}}, "plan": {}}))
    markdown = report(run_cli, folder, tmp_path / "out2")
    assert "third-party packages (rich)" in markdown and "continued pretraining" not in markdown


def test_a_table_of_other_groups_gets_no_findings_section(run_cli, tmp_path):
    folder = make_sweep(tmp_path / "sweep" / "micro", methods=("lora", "ia3", "adapterh"))
    assert "Astraios' findings" not in report(run_cli, folder, tmp_path / "out")


def test_a_scale_only_one_method_ran_at_is_left_out_of_the_findings(run_cli, tmp_path):
    """An advised run of one method at a new scale (`sweeper launch grid --with`) compares nothing there."""
    folder = make_sweep(tmp_path / "sweep" / "micro", evals=False)
    ledger = pl.read_parquet(folder / "cells.parquet")
    extra = ledger.filter((pl.col("method") == "fft") & (pl.col("scale") == "l") & (pl.col("status") == "done")).head(1)
    extra = extra.with_columns(pl.lit("fft-xl").alias("cell_id"), pl.lit("fft-xl-t0").alias("trial_id"),
                               pl.lit("xl").alias("scale"), (pl.col("total_params") * 2).alias("total_params"),
                               (pl.col("final_val_loss") - 0.05).alias("final_val_loss"))
    pl.concat([ledger, extra]).write_parquet(folder / "cells.parquet")
    findings = findings_table(report(run_cli, folder, tmp_path / "out"))
    assert "at 4 of 4 scales" in findings["FFT generally leads to the best performance across all scales"][1]
    # the forecast's targets stay multiples of the scale every method ran at, fft's too
    code, out, err = run_cli("fit", str(folder), "--bootstrap", "0", "--json")
    assert code == 0, err
    at_l = float(extra["total_params"][0]) / 2
    target = next(p for p in json.loads(out)["forecast"]["predictions"]
                  if p["group"] == "fft" and p["label"] == "70B-equivalent")
    assert target["x"] == [pytest.approx(at_l * 70 / 15.5)]
    assert "at 4 of 4 scales" in findings["LoRA usually offers the most favourable trade-off between cost and performance"][1]
