"""The Docker files, checked statically (docker/smoke.sh builds and runs the image; it takes minutes
and a Docker engine, so it is not part of the test suite)."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def _instructions(text: str) -> list:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [tuple(line.strip().split(None, 1)) for line in joined.splitlines() if line.strip()]


def test_dockerfile_base_is_an_argument_and_mpi_works_under_default_seccomp():
    steps = _instructions((DOCKER / "Dockerfile").read_text())
    kinds = [k for k, _ in steps]
    assert kinds[0] == "ARG" and steps[0][1].startswith("BASE=") and steps[1] == ("FROM", "${BASE}")
    env = " ".join(args for kind, args in steps if kind == "ENV")
    assert "MPIR_CVAR_CH4_CMA_ENABLE=0" in env
    copied = [args.split()[0] for kind, args in steps if kind == "COPY"]
    assert {"distbp", "launch", "docker/entrypoint.sh"} <= set(copied)


def test_no_ssh_key_is_made_or_copied_into_the_image():
    steps = _instructions((DOCKER / "Dockerfile").read_text())
    runs = " ".join(args for kind, args in steps if kind == "RUN")
    assert "ssh-keygen" not in runs and "authorized_keys" not in runs and "id_ed25519" not in runs
    assert "rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*" in runs  # the package's host keys go too
    entry = (DOCKER / "entrypoint.sh").read_text()
    assert "ssh-keygen -q -A" in entry and 'mv -T "$tmp" "$dir/keys"' in entry


def test_entrypoint_makes_one_key_pair_per_deployment(tmp_path):
    """Two containers of one deployment (the same volume) get the same pair; another deployment another."""
    import shutil
    if shutil.which("ssh-keygen") is None:
        import pytest
        pytest.skip("ssh-keygen not installed")
    script = (DOCKER / "entrypoint.sh").read_text()
    # run it outside a container: no host keys (they would be this machine's), /root/.ssh under tmp_path
    host_keys = "  [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A\n"
    assert script.count(host_keys) == 1
    script = script.replace(host_keys, "").replace("/root/.ssh", str(tmp_path / "home"))
    assert "/etc/" not in script and "/root" not in script
    (tmp_path / "entry.sh").write_text(script)

    def start(volume):
        (tmp_path / "home").mkdir(exist_ok=True)
        out = subprocess.run(["sh", str(tmp_path / "entry.sh"), "cat", str(tmp_path / "home" / "id_ed25519.pub")],
                             env={"DISTBP_SSH_DIR": str(volume), "PATH": "/usr/bin:/bin"}, capture_output=True,
                             text=True, check=True)
        shutil.rmtree(tmp_path / "home")
        return out.stdout
    one, two = tmp_path / "deployment-1", tmp_path / "deployment-2"
    one.mkdir()
    two.mkdir()
    first, second, other = start(one), start(one), start(two)
    assert first.startswith("ssh-ed25519 ") and first == second and other != first


def test_compose_shares_a_key_volume_and_keeps_its_network_internal():
    text = (DOCKER / "compose.yaml").read_text()
    assert text.count("- ssh-keys:/run/distbp-ssh") == 2
    assert re.search(r"^volumes:\n  ssh-keys:", text, re.MULTILINE)
    assert re.search(r"^networks:\n  mpi:\n    internal: true", text, re.MULTILINE)
