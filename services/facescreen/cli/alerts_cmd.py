"""`facescreen alerts reject ALERT_ID`: a reviewer's "not this person", fed back to screening.

With `--data-dir` the verdict is appended to the data directory's `feedback.jsonl`, which a
running `facescreen run` on that directory applies within about a second; with
`--bootstrap` it is published on the feedback topic, keyed by `--camera`, for the matcher
that holds that camera. Either way it is audited with the reviewer's name.
"""

from __future__ import annotations

import argparse
import json

from facescreen.alerts.feedback import FeedbackError, LocalFeedbackLog, feedback_to_doc, new_feedback
from facescreen.cli import alert_store_cmd
from facescreen.cli.common import CommandError, actor, add_model_args, add_store_args, open_store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("alerts", help="review alerts")
    cmds = p.add_subparsers(dest="alerts_cmd", required=True)
    rej = cmds.add_parser("reject", help="'not this person': stop this alert's track alerting "
                                         "for the subject, suppress look-alikes for a while")
    add_store_args(rej, remote=True)
    add_model_args(rej)
    rej.add_argument("alert_id")
    rej.add_argument("--comment", default="", help="why (kept with the verdict and audited)")
    rej.add_argument("--actor", help="who (default: $FACESCREEN_ACTOR or the login name)")
    rej.add_argument("--bootstrap", help="distributed: publish on the feedback topic of this "
                                         "broker (host:port[,host:port])")
    rej.add_argument("--camera", help="distributed: the alert's source (the topic key)")
    rej.add_argument("--topic-prefix", default="", help="distributed: as the services use")
    rej.set_defaults(handler=cmd_reject)
    alert_store_cmd.register_purge(cmds)


def cmd_reject(args: argparse.Namespace) -> int:
    if args.bootstrap and not args.camera:
        raise CommandError("--bootstrap needs --camera: the feedback topic is keyed by camera")
    try:
        feedback = new_feedback(args.alert_id, actor=actor(args), comment=args.comment,
                                camera=args.camera)
    except FeedbackError as exc:
        raise CommandError(str(exc)) from None
    store = open_store(args, remote=True)
    if args.bootstrap:
        from facescreen.bus.feedback_publish import PublishError, publish_feedback

        try:
            publish_feedback(args.bootstrap.split(","), args.topic_prefix, feedback)
        except PublishError as exc:
            raise CommandError(str(exc)) from None
    elif args.data_dir is not None:
        LocalFeedbackLog(args.data_dir).append(feedback)
    else:
        raise CommandError("--store needs --bootstrap and --camera: a Redis watchlist has no "
                           "feedback log of its own")
    store.record(actor=feedback.actor, action="reject_alert", reason=feedback.comment,
                 alert_id=feedback.alert_id, camera=feedback.camera,
                 feedback_id=feedback.feedback_id)
    print(json.dumps(feedback_to_doc(feedback), sort_keys=True))
    return 0
