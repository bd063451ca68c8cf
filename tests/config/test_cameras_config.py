"""The cameras file (`facescreen ingest --config`): each bad value is exactly one line naming
the file and the field, the URI never shows, and good files load as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from facescreen.cli.main import main
from facescreen.ingest.config import ConfigError, IngestConfig, camera_names

from tests.conftest import REPO

CAM = '[[cameras]]\nname = "gate"\n'
URI = 'uri = "rtsp://admin:hunter2@cam.invalid/live"\n'

BAD = [
    ("", "cameras: no [[cameras]] configured"),
    ("cameras = []\n", "cameras: no [[cameras]] configured"),
    ("[[camera]]\nname = 'a'\n",
     "camera: unknown key (known: max_frame_bytes, jpeg_quality, cameras)"),
    (CAM + URI + "fps = 0\n", "cameras[0].fps: should be greater than 0, got 0"),
    (CAM + URI + "fps = -2.5\n", "cameras[0].fps: should be greater than 0, got -2.5"),
    (CAM + URI + "fps = 500\n", "cameras[0].fps: should be less than or equal to 120, got 500"),
    (CAM + URI + "fps = nan\n", "cameras[0].fps: should be less than or equal to 120, got nan"),
    (CAM + URI + 'fps = "5"\n', "cameras[0].fps: should be a valid number, got '5'"),
    (CAM + URI + "fps = true\n", "cameras[0].fps: should be a valid number, got True"),
    (CAM + URI + "jpeg_quality = 0\n",
     "cameras[0].jpeg_quality: should be greater than or equal to 1, got 0"),
    (CAM + URI + "jpeg_quality = 101\n",
     "cameras[0].jpeg_quality: should be less than or equal to 100, got 101"),
    (CAM + URI + "jpeg_quality = 85.5\n",
     "cameras[0].jpeg_quality: should be a valid integer, got 85.5"),
    ("jpeg_quality = 200\n" + CAM + URI,
     "jpeg_quality: should be less than or equal to 100, got 200"),
    ("max_frame_bytes = 1000\n" + CAM + URI,
     "max_frame_bytes: should be greater than or equal to 1024, got 1000"),
    ("max_frame_bytes = 99999999\n" + CAM + URI,
     "max_frame_bytes: should be less than or equal to 16777216, got 99999999"),
    ('[[cameras]]\nname = "a b"\n' + URI,
     "cameras[0].name: a camera name must be 1-128 of letters, digits, '_.-', not starting "
     "with '.' or '-', got 'a b'"),
    ('[[cameras]]\nname = "-a"\n' + URI,
     "cameras[0].name: a camera name must be 1-128 of letters, digits, '_.-', not starting "
     "with '.' or '-', got '-a'"),
    ("[[cameras]]\n" + URI, "cameras[0].name: required"),
    (CAM, "cameras[0]: give exactly one of uri, uri_env"),
    (CAM + URI + 'uri_env = "GATE_URI"\n', "cameras[0]: give exactly one of uri, uri_env"),
    (CAM + 'uri = ""\n', "cameras[0].uri: must not be empty"),
    (CAM + 'uri = "   "\n', "cameras[0].uri: must not be empty"),
    (CAM + "uri = 5\n", "cameras[0].uri: should be a valid string"),
    (CAM + 'uri_env = "GATE-URI"\n',
     "cameras[0].uri_env: must name an environment variable (letters, digits, '_'), "
     "got 'GATE-URI'"),
    (CAM + 'uri_env = "FACESCREEN_TEST_NO_SUCH_URI"\n',
     "cameras[0].uri_env: environment variable FACESCREEN_TEST_NO_SUCH_URI is not set"),
    (CAM + URI + 'url = "x"\n',
     "cameras[0].url: unknown key (known: name, uri, uri_env, fps, jpeg_quality)"),
    (CAM + URI + CAM + 'uri = "b.mp4"\n', "cameras: camera names must be unique: ['gate']"),
    ("cameras = [3]\n", "cameras[0]: should be a table, got 3"),
    ("cameras = 3\n", "cameras: should be an array, got 3"),
    ("[[cameras]\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_each_bad_value_is_exactly_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cameras.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        IngestConfig.from_toml(path, environ={})
    got = str(caught.value)
    if message == "not valid TOML":
        assert got.startswith(f"{path}: not valid TOML: ")
    else:
        assert got == f"{path}: {message}"
    assert "\n" not in got and "hunter2" not in got


@pytest.mark.parametrize(("text", "message"), [BAD[3], BAD[16], BAD[24]])
def test_the_ingest_command_reports_it_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    path = tmp_path / "cameras.toml"
    path.write_text(text)
    code = main(["ingest", "--config", str(path), "--bootstrap", "127.0.0.1:9"])
    assert code == 2
    assert capsys.readouterr().err == f"facescreen: error: {path}: {message}\n"


def test_the_analyzer_checks_the_whole_file_but_needs_no_uri(tmp_path: Path) -> None:
    path = tmp_path / "cameras.toml"
    path.write_text(CAM + 'uri_env = "FACESCREEN_TEST_NO_SUCH_URI"\n')
    assert camera_names(path) == ["gate"]
    path.write_text(CAM + 'uri_env = "FACESCREEN_TEST_NO_SUCH_URI"\nfps = 0\n')
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.fps: should be greater than 0"):
        camera_names(path)


def test_good_files_load_and_never_show_the_uri(tmp_path: Path) -> None:
    path = tmp_path / "cameras.toml"
    path.write_text("jpeg_quality = 80\nmax_frame_bytes = 2048\n" + CAM + URI + "fps = 5\n"
                    '[[cameras]]\nname = "door.2"\nuri_env = "DOOR_URI"\njpeg_quality = 95\n')
    config = IngestConfig.from_toml(path, environ={"DOOR_URI": "http://cam.invalid/?sig=s3cr"})
    assert config.names == ["gate", "door.2"] and config.max_frame_bytes == 2048
    gate, door = config.cameras
    assert (gate.fps, gate.jpeg_quality, door.fps, door.jpeg_quality) == (5.0, 80, None, 95)
    assert gate.spec().uri == "rtsp://admin:hunter2@cam.invalid/live"
    assert door.spec().live and door.spec().fps_cap is None
    for text in (repr(config), str(config), repr(gate), str(gate), repr(gate.uri)):
        assert "hunter2" not in text and "s3cr" not in text, text
    assert "rtsp://***@cam.invalid/live" in repr(gate)  # the masked form, as in logs


def test_shipped_cameras_files_load() -> None:
    for path in (REPO / "deploy" / "cameras.example.toml",):
        config = IngestConfig.from_toml(path, environ={"ENTRANCE1_URI": "rtsp://c.invalid/1"})
        assert config.names == ["entrance-1"] and config.cameras[0].fps == 5.0
