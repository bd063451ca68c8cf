"""The topics file (`--topics`): each bad value is exactly one line naming the file and the
field, the co-partitioning rule holds, and good files load into `BusConfig` as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from facescreen.bus.topics import BusConfig
from facescreen.bus.topics_config import TopicsConfigError
from facescreen.cli.main import main

KNOWN_ROLES = "replication, frames, faces, alerts, dead_letter, audit, feedback, matcher_state"
KNOWN_KEYS = "name, partitions, retention_ms, configs"

BAD = [
    ("[frame]\npartitions = 3\n", f"frame: unknown key (known: {KNOWN_ROLES})"),
    ("[frames]\npartition = 3\n", f"frames.partition: unknown key (known: {KNOWN_KEYS})"),
    ("frames = 3\n", "frames: should be a table, got 3"),
    ("[frames]\npartitions = 0\n",
     "frames.partitions: should be greater than or equal to 1, got 0"),
    ("[frames]\npartitions = 20000\n",
     "frames.partitions: should be less than or equal to 10000, got 20000"),
    ('[frames]\npartitions = "12"\n', "frames.partitions: should be a valid integer, got '12'"),
    ("[frames]\npartitions = 1.5\n", "frames.partitions: should be a valid integer, got 1.5"),
    ("[frames]\nretention_ms = 0\n",
     "frames.retention_ms: must be > 0 ms, or -1 for forever, got 0"),
    ("[audit]\nretention_ms = -5\n",
     "audit.retention_ms: must be > 0 ms, or -1 for forever, got -5"),
    ('[alerts]\nname = "site alerts"\n',
     "alerts.name: a topic name is letters, digits, '.', '_' and '-' (not '.' or '..'), "
     "got 'site alerts'"),
    ('[alerts]\nname = ".."\n',
     "alerts.name: a topic name is letters, digits, '.', '_' and '-' (not '.' or '..')"),
    (f'[alerts]\nname = "{"a" * 250}"\n',
     "alerts.name: a topic name has at most 249 characters, got a str of 252 chars"),
    ('[alerts]\nname = "facescreen.faces"\n',
     "two roles share the topic name(s) ['facescreen.faces']"),
    ("replication = 0\n", "replication: should be greater than or equal to 1, got 0"),
    ("replication = 64\n", "replication: should be less than or equal to 32, got 64"),
    ('replication = "3"\n', "replication: should be a valid integer, got '3'"),
    ("[faces]\npartitions = 6\n[feedback]\npartitions = 12\n",
     "feedback.partitions: must be the faces topic's 6, not 12: they are co-partitioned "
     "(leave it out to follow)"),
    ("[matcher_state]\npartitions = 3\n",
     "matcher_state.partitions: must be the faces topic's 12, not 3: they are co-partitioned "
     "(leave it out to follow)"),
    ('[frames]\nconfigs = { "retention.ms" = "5" }\n',
     "frames.configs: 'retention.ms': set retention_ms instead"),
    ('[frames]\nconfigs = { "Max Bytes" = "5" }\n',
     "frames.configs: 'Max Bytes' is not a Kafka topic config name (like "
     "'max.message.bytes')"),
    ('[frames]\nconfigs = { "segment.ms" = [1] }\n',
     "frames.configs.segment.ms: should be a valid string"),
    ("[frames]\nconfigs = 5\n", "frames.configs: should be a table, got 5"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_each_bad_value_is_exactly_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "topics.toml"
    path.write_text(text)
    with pytest.raises(TopicsConfigError) as caught:
        BusConfig.from_toml(path)
    assert str(caught.value) == f"{path}: {message}"


def test_unreadable_and_broken_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(TopicsConfigError, match=r"^cannot read .*none\.toml: No such file"):
        BusConfig.from_toml(tmp_path / "none.toml")
    (tmp_path / "broken.toml").write_text("[frames\n")
    with pytest.raises(TopicsConfigError, match=r"broken\.toml: not valid TOML: "):
        BusConfig.from_toml(tmp_path / "broken.toml")


@pytest.mark.parametrize("command", ["topics", "alert-store"])
def test_the_commands_report_it_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           command: str) -> None:
    path = tmp_path / "topics.toml"
    text, message = BAD[16]
    path.write_text(text)
    args = (["topics", "create"] if command == "topics"
            else ["alert-store", "--db", f"sqlite:///{tmp_path}/a.db"])
    code = main([*args, "--topics", str(path), "--bootstrap", "127.0.0.1:9"])
    assert code == 2
    assert capsys.readouterr().err == f"facescreen: error: {path}: {message}\n"


@pytest.mark.parametrize(("flags", "message"), [
    (["--topic-prefix", "site a."], "topic prefix 'site a.': a topic name is letters, digits, "
     "'.', '_' and '-' (not '.' or '..')"),
    (["--bootstrap", "kafka:99999"],
     "bootstrap server 'kafka:99999' is not HOST:PORT (port 1..65535)"),
    (["--bootstrap", " , "], "no bootstrap server given (HOST:PORT[,HOST:PORT...])"),
])
def test_bad_bus_flags_are_one_line(capsys: pytest.CaptureFixture[str], flags: list[str],
                                    message: str) -> None:
    code = main(["topics", "create", "--bootstrap", "127.0.0.1:9", *flags])
    assert code == 2
    assert capsys.readouterr().err == f"facescreen: error: {message}\n"


def test_good_files_load_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "topics.toml"
    path.write_text('replication = 3\n[faces]\npartitions = 24\nname = "site.faces"\n'
                    '[frames]\nretention_ms = 300000\n'
                    'configs = { "max.message.bytes" = 4194304, "preallocate" = true }\n'
                    '[matcher_state]\nconfigs = { "segment.ms" = "60000" }\n'
                    "[audit]\nretention_ms = -1\n")
    bus = BusConfig.from_toml(path)
    assert bus.replication == 3 and bus.faces.name == "site.faces"
    # feedback and the matcher's state follow the faces topic's partitions
    assert bus.faces.partitions == bus.feedback.partitions == bus.matcher_state.partitions == 24
    assert bus.frames.kafka_configs() == {"retention.ms": "300000", "cleanup.policy": "delete",
                                          "max.message.bytes": "4194304",
                                          "preallocate": "true"}
    # configs are merged over the role's defaults: the state topic stays compacted
    assert bus.matcher_state.kafka_configs()["cleanup.policy"] == "compact,delete"
    assert bus.matcher_state.kafka_configs()["segment.ms"] == "60000"
    assert bus.alerts == BusConfig().alerts and bus.audit.retention_ms == -1
    assert BusConfig.from_mapping({}) == BusConfig()
    assert bus.with_prefix("stack-2.").faces.name == "stack-2.site.faces"
