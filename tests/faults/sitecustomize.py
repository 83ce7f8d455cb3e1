"""Fault injection for the failing-trial test: with this folder on PYTHONPATH, every Python process
that starts (the Ray workers that run trials) imports this file, and its `sweeper.train.loop` raises when a
trial saves its final weights, as a trial that crashes after training (full disk, lost storage) would."""

import importlib.abc
import importlib.machinery
import sys

MESSAGE = "injected fault: storage lost while saving the final weights"


def _fail(*args, **kwargs):
    raise OSError(MESSAGE)


class _BreakSaveFinal(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "sweeper.train.loop":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            module.save_final = _fail

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _BreakSaveFinal())
