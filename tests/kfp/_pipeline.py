"""Run inside the kfp venv by tests/kfp/test_kfp.py (kfp cannot live in the dev venv).

``compile DIR IMAGE``: a pipeline using the container and the lightweight components, compiled,
loaded back and parsed as KFP's PipelineSpec; prints what the test checks as JSON.
``run ROOT MODEL_URI CSV NAME``: the lightweight steps run by ``kfp.local``'s SubprocessRunner:
batch on CSV, then deploy (apply) as NAME on the local target.
``load FILE...``: component YAMLs (as ``modelpack kfp component`` writes them) loaded back.
"""

# No `from __future__ import annotations`: kfp reads the pipelines' annotations as objects.
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from kfp import compiler, components, dsl, local
from kfp.pipeline_spec import pipeline_spec_pb2

from modelpack import kfp as mpkfp


def _spec(path: Path) -> Any:
    # ignore_unknown_fields=False: a field KFP's schema lacks is an error.
    return json_format.ParseDict(yaml.safe_load(path.read_text()), pipeline_spec_pb2.PipelineSpec())


def compile_pipeline(out: Path, image: str) -> dict[str, Any]:
    batch, deploy = mpkfp.batch_component(image), mpkfp.deploy_component(image)
    batch_py, deploy_py = (
        mpkfp.batch_python_component(),
        mpkfp.deploy_python_component(packages_to_install=["modelpack[kubernetes]"]),
    )

    @dsl.pipeline(name="score-and-deploy")  # type: ignore[untyped-decorator]
    def score_and_deploy(model_uri: str, data_uri: str, name: str) -> None:
        data = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset)
        scored = batch(model_uri=model_uri, input_data=data.output, columns="a,b")
        batch_py(
            model_uri=model_uri, input_data=scored.outputs["predictions"], output_format="jsonl"
        )
        deployed = deploy(
            target="kubernetes", name=name, model_uri=model_uri, options={"replicas": 2}
        )
        deploy_py(target="kubernetes", name=name, model_uri=model_uri).after(deployed)

    pipeline = out / "pipeline.yaml"
    compiler.Compiler().compile(score_and_deploy, str(pipeline))
    spec = _spec(pipeline)
    loaded = components.load_component_from_file(str(pipeline))
    executors = json_format.MessageToDict(spec)["deploymentSpec"]["executors"]
    return {
        "pipeline": spec.pipeline_info.name,
        "loaded": loaded.name,
        "inputs": sorted(loaded.component_spec.inputs),
        "tasks": sorted(spec.root.dag.tasks),
        "executors": {
            name: {
                "image": e["container"]["image"],
                "command": list(e["container"]["command"]),
                "args": list(e["container"].get("args", [])),
            }
            for name, e in executors.items()
            if "container" in e
        },
    }


def run_local(root: Path, model_uri: str, csv: Path, name: str) -> dict[str, Any]:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    batch = mpkfp.batch_python_component()
    deploy = mpkfp.deploy_python_component()

    @dsl.pipeline  # type: ignore[untyped-decorator]
    def score(model_uri: str, data_uri: str) -> dsl.Dataset:
        data = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset)
        return batch(model_uri=model_uri, input_data=data.output, passthrough="id").outputs[
            "predictions"
        ]

    predictions = score(model_uri=model_uri, data_uri=str(csv)).output
    # A task with parameters only runs on its own: apply, with nothing there yet, creates.
    deployed = deploy(target="local", name=name, model_uri=model_uri, timeout=60.0).output
    return {
        "path": predictions.path,
        "metadata": dict(predictions.metadata),
        "deployed": json.loads(deployed),
    }


def load(path: Path) -> dict[str, Any]:
    loaded = components.load_component_from_file(str(path))
    [executor] = _spec(path).deployment_spec["executors"].values()
    return {
        "name": loaded.name,
        "inputs": sorted(loaded.component_spec.inputs),
        "outputs": sorted(loaded.component_spec.outputs or {}),
        "container": json_format.MessageToDict(executor)["container"],
    }


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "compile":
        result = compile_pipeline(Path(args[0]), args[1])
    elif command == "run":
        result = run_local(Path(args[0]), args[1], Path(args[2]), args[3])
    else:
        result = {Path(arg).name: load(Path(arg)) for arg in args}
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
