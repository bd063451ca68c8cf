"""Triton python-backend model `face_pipeline`: JPEG frames in, faces with embeddings out.

Pre- and post-processing run next to the models instead of in the client, so a frame crosses
the network once as a JPEG (tens of kB) instead of as a float32 detector input (MBs) plus its
heatmaps plus the chips. The stages are the project's pure core (`facescreen.core`, copied
into `1/lib` by `devstack.triton.build_cpu_repository`), the same code FaceAnalyzer runs:

  decode JPEG -> letterbox -> detector (BLS) -> decode + NMS -> align -> quality -> embedder (BLS)

Quality runs here, not in the client: it gates the embedder (faces that fail the policy are
never embedded, as in FaceAnalyzer) and needs the aligned chip, which would otherwise have to
travel back (67 kB per face). The policy travels with the request (optional `policy` input,
JSON of QualityPolicy fields; default the config's screening policy), so the client keeps
control of it. Each face's quality comes back as JSON (score, components, reasons) so the
client rebuilds the very same `Quality` object.

Inputs:  jpeg [F] bytes, one encoded frame each; policy [1] bytes (optional).
Outputs: frame_error [F] ("" or why the frame was unreadable), frame_hw [F,2],
         per face (N faces over all frames, in frame order): frame_index [N], boxes [N,4]
         (x1,y1,x2,y2 in frame pixels), landmarks [N,5,2], scores [N], quality [N] (JSON),
         embeddings [N,D] (L2-normalised; zero rows for faces that failed quality).

config.pbtxt parameters (`string_value`): python_path (folders added to sys.path, relative to
the version folder), pipeline_config (PipelineConfig TOML, optional), detector_model,
embedder_model, detector_max_batch, embedder_max_batch, detector_outputs (comma-separated).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()}


class TritonPythonModel:
    """Runs the whole analyzer for each request's frames; detector and embedder through BLS."""

    def initialize(self, args: dict[str, str]) -> None:
        params = _parameters(json.loads(args["model_config"]))
        version_dir = Path(args["model_repository"]) / args["model_version"]
        for entry in reversed((params.get("python_path") or "").split(os.pathsep)):
            if entry:
                path = Path(entry) if Path(entry).is_absolute() else version_dir / entry
                sys.path.insert(0, str(path))
        # imported here: the core is found only once python_path is on sys.path
        from facescreen.config.pipeline import load_pipeline_config
        from facescreen.core import alignment, detection, quality, specs

        self._det, self._align, self._quality, self._specs = detection, alignment, quality, specs
        toml = params.get("pipeline_config") or ""
        self.config = (load_pipeline_config(version_dir / toml) if toml
                       else specs.PipelineConfig())
        self.detector = params.get("detector_model") or "detector"
        self.embedder = params.get("embedder_model") or "embedder"
        self.det_batch = int(params.get("detector_max_batch") or 1)
        self.emb_batch = int(params.get("embedder_max_batch") or 1)
        self.det_outputs = (params.get("detector_outputs")
                            or "heatmap,scale,offset,landmarks").split(",")
        self.template = np.asarray(self.config.embedder.template, np.float32)

    # -- BLS -----------------------------------------------------------------------------------

    def _infer(self, model: str, name: str, batch: np.ndarray, outputs: list[str],
               chunk: int) -> dict[str, np.ndarray]:
        """Call another model of this server in chunks of its max_batch_size."""
        parts: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
        for start in range(0, len(batch), chunk):
            request = pb_utils.InferenceRequest(
                model_name=model, requested_output_names=outputs,
                inputs=[pb_utils.Tensor(name, np.ascontiguousarray(batch[start:start + chunk]))])
            response = request.exec()
            if response.has_error():
                raise RuntimeError(f"{model}: {response.error().message()}")
            for o in outputs:
                parts[o].append(pb_utils.get_output_tensor_by_name(response, o).as_numpy())
        return {o: np.concatenate(v) for o, v in parts.items()}

    # -- stages --------------------------------------------------------------------------------

    def _policy(self, request: Any) -> Any:
        tensor = pb_utils.get_input_tensor_by_name(request, "policy")
        if tensor is None:
            return self.config.screening
        raw = tensor.as_numpy().reshape(-1)[0]
        values = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        return self._specs.QualityPolicy(**values)

    def _detect(self, images: dict[int, np.ndarray]) -> dict[int, list[Any]]:
        """Detections per frame; frames whose letterboxed inputs match share detector calls."""
        spec = self.config.detector
        prepared = {i: self._det.prepare_detector_input(img, spec) for i, img in images.items()}
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (batch, _) in prepared.items():
            groups.setdefault(batch.shape, []).append(i)
        found: dict[int, list[Any]] = {}
        for members in groups.values():
            stacked = np.concatenate([prepared[i][0] for i in members])
            outputs = self._infer(self.detector, spec.input_name, stacked, self.det_outputs,
                                  self.det_batch)
            for row, i in enumerate(members):
                one = {k: v[row:row + 1] for k, v in outputs.items()}
                found[i] = self._det.detections_from_outputs(
                    one, prepared[i][1], images[i].shape[:2], spec)
        return found

    def _analyze(self, request: Any) -> Any:
        jpegs = pb_utils.get_input_tensor_by_name(request, "jpeg").as_numpy().reshape(-1)
        policy = self._policy(request)
        errors: list[bytes] = []
        sizes: list[tuple[int, int]] = []
        images: dict[int, np.ndarray] = {}
        for i, data in enumerate(jpegs):
            buffer = np.frombuffer(bytes(data), np.uint8)
            image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
            if image is None:
                errors.append(b"not a decodable image")
                sizes.append((0, 0))
                continue
            errors.append(b"")
            sizes.append(image.shape[:2])
            images[i] = image
        detections = self._detect(images) if images else {}
        emb = self.config.embedder
        owners: list[int] = []
        frame_index: list[int] = []
        faces: list[Any] = []
        qualities: list[bytes] = []
        chips: list[np.ndarray] = []
        for i in sorted(detections):
            for d in detections[i]:
                chip = self._align.align_face(images[i], d.landmarks, self.template, emb.size)
                q = self._quality.assess(d, chip, policy)
                if q.passed:
                    owners.append(len(faces))
                    chips.append(chip)
                frame_index.append(i)
                faces.append(d)
                qualities.append(json.dumps({"score": q.score, "components": q.components,
                                             "reasons": list(q.reasons)}).encode())
        embeddings = np.zeros((len(faces), emb.dim), np.float32)
        if chips:
            batch = self._align.chips_to_batch(chips, emb.colour, emb.mean, emb.std)
            raw = self._infer(self.embedder, emb.input_name, batch, [emb.output_name],
                              self.emb_batch)[emb.output_name]
            embeddings[owners] = self._align.l2_normalise(raw)
        n = len(faces)
        tensors = [
            pb_utils.Tensor("frame_error", np.array(errors, dtype=np.object_)),
            pb_utils.Tensor("frame_hw", np.array(sizes, np.int32).reshape(-1, 2)),
            pb_utils.Tensor("frame_index", np.array(frame_index, np.int32)),
            pb_utils.Tensor("boxes", np.array([d.box for d in faces], np.float32).reshape(n, 4)),
            pb_utils.Tensor("landmarks", np.array([d.landmarks for d in faces],
                                                  np.float32).reshape(n, 5, 2)),
            pb_utils.Tensor("scores", np.array([d.score for d in faces], np.float32)),
            pb_utils.Tensor("quality", np.array(qualities, dtype=np.object_)),
            pb_utils.Tensor("embeddings", embeddings),
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Each request is already a batch of frames (max_batch_size 0: faces per frame vary)."""
        responses = []
        for request in requests:
            try:
                responses.append(self._analyze(request))
            except Exception as exc:  # a bad request fails alone, with its reason
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"face_pipeline: {exc}")))
        return responses

    def finalize(self) -> None:
        """Nothing to release: the models it calls belong to the server."""
