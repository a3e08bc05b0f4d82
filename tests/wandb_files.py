"""Reading what an offline W&B run wrote, without W&B's servers: the records of a `.wandb`
transaction log (LevelDB-style 32 KiB blocks of chunks, each with a 7-byte header: crc32c,
length, type; after a 7-byte ':W&B' file header)."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, List


def read_records(path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks, pending = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    records = []
    for raw in chunks:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


def history_by_step(path) -> Dict[int, dict]:
    """{W&B step: {key: value}} of the history records in a .wandb file."""
    out: Dict[int, dict] = {}
    for rec in read_records(path):
        if rec.WhichOneof("record_type") != "history":
            continue
        item = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
        if "_step" in item:
            out[int(item["_step"])] = item
    return out


def run_record(path):
    return next(r.run for r in read_records(path) if r.WhichOneof("record_type") == "run")


def newest_offline_run(run_dir) -> Path:
    """The .wandb file of the newest offline run under `<run_dir>/wandb/`."""
    runs: List[Path] = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    assert runs, f"no offline W&B run under {run_dir}/wandb"
    return next(runs[-1].glob("run-*.wandb"))
