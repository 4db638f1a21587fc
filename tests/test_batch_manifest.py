"""Batch manifests (headforge/batch/manifest.py) and item keys (keys.item_key): every refusal names the file,
the line and the fix; options get the command's declared types (JSONL strict, CSV read as the type); keys follow
the input's contents and the config, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headforge.batch.jobs import JOBS, JobKind
from headforge.batch.keys import item_key
from headforge.batch.manifest import ManifestError, read_manifest
from headforge.pipeline.export_source import ExportFormat
from headforge.pipeline.methods import Device


def jsonl(tmp_path: Path, *rows: dict | str, name: str = "m.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def refused(path: Path, *words: str) -> str:
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    text = str(info.value)
    assert str(path) in text and "Fix:" in text, text
    for word in words:
        assert word in text, (word, text)
    return text


def test_jsonl_items_get_the_commands_types(tmp_path):
    m = read_manifest(jsonl(tmp_path, {"id": "a", "input": "a.jpg", "job": "photo", "steps": 300},
                            "# a comment line", "",
                            {"id": "b", "input": "cap", "job": "reconstruct", "device": "cpu", "resolution": 64,
                             "init_ply": "x.ply", "timeout": 90},
                            {"id": "c", "input": "run", "job": "export", "format": ["glb", "spz"]}))
    a, b, c = m.items
    assert (a.job, a.options, a.line, a.timeout) == (JobKind.PHOTO, {"steps": 300}, 1, None)
    assert b.options == {"device": Device.CPU, "resolution": 64, "init_ply": Path("x.ply")} and b.timeout == 90.0
    assert b.line == 4
    assert c.options == {"format": (ExportFormat.GLB, ExportFormat.SPZ)}
    assert m.base == tmp_path.resolve()
    assert c.argv_options() == {"format": ["glb", "spz"]}


def test_csv_cells_are_read_as_the_declared_type(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,input,job,steps,offsets,format,timeout\n"
                    "a,a.jpg,photo,300,,,\n"
                    "f,cap,fit-rig,,false,,12.5\n"
                    "e,run,export,,,glb;vrm,\n")
    a, f, e = read_manifest(path).items
    assert a.options == {"steps": 300}
    assert f.options == {"offsets": False} and f.timeout == 12.5
    assert e.options == {"format": (ExportFormat.GLB, ExportFormat.VRM)}
    assert [i.line for i in (a, f, e)] == [2, 3, 4]


@pytest.mark.parametrize("row, words", [
    ({"id": "a", "input": "a.jpg", "job": "paint"}, ["line 1", "unknown job 'paint'", "photo, reconstruct"]),
    ({"id": "a", "input": "a.jpg", "job": "photo", "stepz": 3}, ["line 1", "no option 'stepz'", "steps"]),
    ({"id": "a", "input": "a.jpg", "job": "photo", "steps": "300"}, ["line 1: steps", "'300'", "integer"]),
    ({"id": "a", "input": "a.jpg", "job": "photo", "steps": 0}, ["line 1: steps", ">= 1"]),
    ({"id": "a", "input": "a.jpg", "job": "photo", "steps": True}, ["line 1: steps"]),
    ({"id": "a", "input": "c", "job": "reconstruct", "device": "tpu"}, ["line 1: device", "cuda"]),
    ({"id": "a", "input": "a.jpg", "job": "photo", "out": "x"}, ["'out' is set by the batch"]),
    ({"id": "a", "input": "c", "job": "reconstruct", "resume": True}, ["'resume' is set by the batch"]),
    ({"id": "a/../b", "input": "a.jpg", "job": "photo"}, ["not a safe folder name"]),
    ({"input": "a.jpg", "job": "photo"}, ["line 1 has no 'id'"]),
    ({"id": 3, "input": "a.jpg", "job": "photo"}, ["'id' must be a string"]),
    ({"id": "a", "input": "a.jpg", "job": "photo", "timeout": -1}, ["timeout = -1"]),
    ({"id": "a", "input": "a.jpg", "job": "photo", "timeout": float("nan")}, ["timeout"]),
])
def test_bad_jsonl_items_are_refused_naming_the_line(tmp_path, row, words):
    refused(jsonl(tmp_path, row), *words)


def test_malformed_files_are_refused(tmp_path):
    refused(jsonl(tmp_path, '{"id": "a", "input": "a.jpg", "job": "photo"}', "{not json"), "line 2 is not JSON")
    refused(jsonl(tmp_path, "[1, 2]"), "line 1 is a JSON list")
    refused(jsonl(tmp_path, "# only a comment"), "no items")
    yaml = tmp_path / "m.yaml"
    yaml.write_text("- id: a\n")
    refused(yaml, "must be .jsonl or .csv")
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    refused(binary, "UTF-8")
    refused(tmp_path / "absent.jsonl", "manifest not found")
    csv = tmp_path / "m.csv"
    csv.write_text("id,job\na,photo\n")
    refused(csv, "lacks input")
    csv.write_text("id,input,job,steps\na,a.jpg,photo,3,4\n")
    refused(csv, "line 2 has 5 cells")
    csv.write_text("id,input,job,steps\na,a.jpg,photo,many\n")
    refused(csv, "line 2: steps", "'many'")


def test_duplicate_ids_are_refused_even_by_case(tmp_path):
    refused(jsonl(tmp_path, {"id": "Anna", "input": "a.jpg", "job": "photo"},
                  {"id": "bob", "input": "b.jpg", "job": "photo"},
                  {"id": "anna", "input": "c.jpg", "job": "photo"}), "'anna' is used on lines 1 and 3")


def test_a_folder_of_photos_is_a_manifest(tmp_path):
    for name in ("b photo.JPG", "a.png", "notes.txt", "a.jpg"):
        (tmp_path / name).write_bytes(b"x")
    m = read_manifest(tmp_path)
    assert [(i.id, i.input, i.job) for i in m.items] == [
        ("a", "a.jpg", JobKind.PHOTO), ("a-2", "a.png", JobKind.PHOTO), ("b_photo", "b photo.JPG", JobKind.PHOTO)]
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, "holds no photos")


def test_every_job_runs_a_command_whose_input_parameter_exists():
    for spec in JOBS.values():
        assert spec.input_param not in spec.parameters()
        assert {"out", "overwrite"} <= set(__import__("inspect").signature(spec.command).parameters)


def test_item_keys_follow_contents_and_config_only(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"one")
    cap = tmp_path / "cap"
    (cap / "images").mkdir(parents=True)
    (cap / "images" / "0.png").write_bytes(b"view")
    rows = [{"id": "a", "input": "a.jpg", "job": "photo", "steps": 300},
            {"id": "c", "input": "cap", "job": "reconstruct"}]

    def keys(*items):
        m = read_manifest(jsonl(tmp_path, *items))
        return [item_key(m, i) for i in m.items]

    first = keys(*rows)
    assert keys(*rows) == first  # deterministic
    assert keys({**rows[0], "id": "renamed"}, rows[1]) == first  # the id is not the config
    assert keys({**rows[0], "steps": 301}, rows[1])[0] != first[0]  # options count
    photo.write_bytes(b"two")
    assert keys(*rows)[0] != first[0]  # the file's bytes count
    photo.write_bytes(b"one")
    (cap / "images" / "0.png").write_bytes(b"weiv")
    assert keys(*rows)[1] != first[1]  # a folder's contents count
    (cap / "images" / "0.png").write_bytes(b"view")
    (cap / "images" / "0.png").rename(cap / "images" / "1.png")
    assert keys(*rows)[1] != first[1]  # and its file names
    (cap / "images" / "1.png").rename(cap / "images" / "0.png")
    assert keys(*rows) == first
    ply = tmp_path / "init.ply"
    ply.write_bytes(b"a")
    with_ply = keys(rows[0], {**rows[1], "init_ply": "init.ply"})[1]
    ply.write_bytes(b"b")
    assert keys(rows[0], {**rows[1], "init_ply": "init.ply"})[1] != with_ply  # path options by content
