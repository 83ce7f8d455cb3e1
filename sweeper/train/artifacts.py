"""What a trial leaves on storage: resumable checkpoints and its final tuned weights, and how to load them.

Local disk, NFS or object storage (anything `pyarrow.fs` opens: a path, s3://, gs://). sweeper keeps
its own checkpoints, one folder per trial id, instead of relying on Ray's per-run
folders: the same code then resumes a trial after a Train worker is killed (FailureConfig restarts
the loop, which finds its checkpoint here), after the whole driver is killed (the rerun builds the
same trial id), and when the loop runs in-process with no Ray at all.

The store root is one sweep's own prefix, `<storage>/<sweep id>` (sweeper.sweep.launch): trial ids repeat
across sweeps of the same grid, so a root shared by two sweeps would let one resume the other's trial,
delete its step folders in `commit()` and overwrite its final weights.

Layout under the store root:
    <trial_id>/step-000040/...   a complete checkpoint (uploaded first)
    <trial_id>/LATEST            "step-000040", written only after the upload finished
    <trial_id>/final/...         the tuned weights of a finished trial (+ FINAL marker)
Object stores have no atomic rename, so completeness is marked by LATEST / FINAL being written last;
a checkpoint without its marker is ignored and overwritten.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
import torch.distributed as dist

from sweeper.ladders import LoadedModel, get_ladder
from sweeper.methods import apply_method, load_trainable_state_dict
from sweeper.schema import Cell, Trial

LATEST = "LATEST"
FINAL = "final"
FINAL_MARKER = "FINAL"


class CheckpointStore:
    def __init__(self, uri: str | Path):
        uri = str(uri)
        if "://" not in uri:
            uri = str(Path(uri).expanduser().resolve())
            Path(uri).mkdir(parents=True, exist_ok=True)
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _read_text(self, path: str) -> str | None:
        try:
            with self.fs.open_input_stream(path) as stream:
                return stream.read().decode().strip()
        except (FileNotFoundError, OSError):
            return None

    def _write_text(self, path: str, text: str) -> None:
        with self.fs.open_output_stream(path) as stream:
            stream.write(text.encode())

    def _copy_up(self, local_dir: Path, remote: str) -> None:
        self.fs.create_dir(remote, recursive=True)
        pafs.copy_files(str(local_dir), remote, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def _download(self, remote: str, local_dir: Path) -> Path:
        if local_dir.exists():
            shutil.rmtree(local_dir)
        local_dir.mkdir(parents=True)
        pafs.copy_files(remote, str(local_dir), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return local_dir

    @staticmethod
    def step_name(step: int) -> str:
        return f"step-{step:06d}"

    def upload(self, trial_id: str, step: int, local_dir: Path) -> None:
        """Copy files into a step's folder. Sharded engines (ZeRO) call this from every rank."""
        self._copy_up(local_dir, self._path(trial_id, self.step_name(step)))

    def commit(self, trial_id: str, step: int) -> None:
        """Point LATEST at a fully uploaded step, then drop the older ones."""
        name = self.step_name(step)
        self._write_text(self._path(trial_id, LATEST), name)
        for info in self.fs.get_file_info(pafs.FileSelector(self._path(trial_id), allow_not_found=True)):
            if info.type == pafs.FileType.Directory and info.base_name.startswith("step-") and info.base_name != name:
                self.fs.delete_dir(info.path)

    def latest(self, trial_id: str) -> str | None:
        """Name of the newest complete checkpoint of a trial, if any."""
        name = self._read_text(self._path(trial_id, LATEST))
        if name and self.fs.get_file_info(self._path(trial_id, name)).type == pafs.FileType.Directory:
            return name
        return None

    def restore(self, trial_id: str, local_dir: Path) -> Path | None:
        """Download the newest complete checkpoint into `local_dir`; None when the trial has none."""
        name = self.latest(trial_id)
        return self._download(self._path(trial_id, name), local_dir) if name else None

    def save_final(self, trial_id: str, local_dir: Path) -> str:
        """Upload a finished trial's tuned weights, then drop its resume checkpoints (a full fine-tune's
        optimizer state is several times the model); returns the weights' URI (recorded in the ledger)."""
        remote = self._path(trial_id, FINAL)
        self.fs.delete_dir_contents(remote, missing_dir_ok=True)
        self._copy_up(local_dir, remote)
        self._write_text(self._path(trial_id, FINAL, FINAL_MARKER), "complete")
        for info in self.fs.get_file_info(pafs.FileSelector(self._path(trial_id), allow_not_found=True)):
            if info.base_name.startswith("step-") or info.base_name == LATEST:
                (self.fs.delete_dir if info.type == pafs.FileType.Directory else self.fs.delete_file)(info.path)
        return self.final_uri(trial_id)

    def final_uri(self, trial_id: str) -> str:
        return f"{self.uri.rstrip('/')}/{trial_id}/{FINAL}"

    @staticmethod
    def split_final_uri(uri: str) -> tuple[str, str]:
        """(store URI, trial key) of a `final_uri`."""
        store_uri, _, trial_id = uri.rstrip("/").removesuffix(f"/{FINAL}").rpartition("/")
        return store_uri, trial_id

    def fetch_final(self, trial_id: str, local_dir: Path) -> Path:
        remote = self._path(trial_id, FINAL)
        if self._read_text(self._path(trial_id, FINAL, FINAL_MARKER)) != "complete":
            raise FileNotFoundError(f"{self.uri}/{trial_id}/{FINAL}: no complete final checkpoint")
        path = self._download(remote, local_dir)
        (path / FINAL_MARKER).unlink(missing_ok=True)
        return path


def save_checkpoint(store: CheckpointStore, trial_id: str, engine: Any, state: dict, rank: int) -> None:
    """Every rank of a sharded engine uploads its shard; rank 0 adds the loop state and commits."""
    with tempfile.TemporaryDirectory(prefix="sweeper-ckpt-") as scratch:
        path = Path(scratch)
        engine.save(path)
        if rank == 0:
            torch.save(torch.get_rng_state(), path / "rng.pt")
            (path / "state.json").write_text(json.dumps(state))
        if rank == 0 or engine.sharded:
            store.upload(trial_id, state["step"], path)
    _barrier()
    if rank == 0:
        store.commit(trial_id, state["step"])
    _barrier()


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_final(store: CheckpointStore, trial: Trial, engine: Any, model_source: str, rank: int) -> str:
    """The tuned weights (trainable tensors only) + what they apply to: enough to rebuild the model."""
    weights = engine.trainable_weights()
    uri = store.final_uri(trial.trial_id)
    if rank == 0:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="sweeper-final-") as scratch:
            path = Path(scratch)
            save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "trainable.safetensors"))
            meta = {"cell": trial.cell.model_dump(mode="json"), "cell_id": trial.cell.id, "lr": trial.recipe.lr,
                    "seed": trial.seed, "model_source": model_source}
            (path / "meta.json").write_text(json.dumps(meta, indent=2))
            uri = store.save_final(trial.trial_id, path)
    _barrier()
    return uri


def load_tuned_model(final_uri: str, *, device: str = "cpu") -> tuple[LoadedModel, dict]:
    """Rebuild a tuned model from its final checkpoint: base from the ladder + method + trained tensors."""
    from safetensors.torch import load_file

    store_uri, trial_id = CheckpointStore.split_final_uri(final_uri)
    store = CheckpointStore(store_uri)
    with tempfile.TemporaryDirectory(prefix="sweeper-final-") as scratch:
        path = store.fetch_final(trial_id, Path(scratch) / "final")
        meta = json.loads((path / "meta.json").read_text())
        weights = load_file(str(path / "trainable.safetensors"))
    cell = Cell.model_validate(meta["cell"])
    loaded = get_ladder(cell.ladder).load(cell.scale, dtype=torch.float32)
    model = apply_method(loaded.model, cell.method, cell.method_config)
    load_trainable_state_dict(model, weights)
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=loaded.tokenizer, source=final_uri), meta
