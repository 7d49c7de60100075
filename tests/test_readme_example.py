"""README's user-model-and-data example runs as written: its blocks are taken from README.md (a
`# file.py` block is written to that file, a bash block runs line by line with this checkout's python
and mpiexec, any other python block runs as a script), so the README cannot rot."""
import os
import re
import subprocess
import sys

import pytest
from test_train import MPIEXEC, needs_mpi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example_blocks() -> list:
    """(language, text) of each fenced block between the example's markers in README.md."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"<!-- example: user model and data -->(.*?)<!-- end example -->", text, re.DOTALL)
    assert section, "README.md lost its user model and data example"
    return re.findall(r"```(\w+)\n(.*?)```", section.group(1), re.DOTALL)


def test_the_example_has_a_model_file_commands_and_a_fit_call():
    kinds = [(lang, body.splitlines()[0]) for lang, body in example_blocks()]
    assert kinds[0] == ("python", "# my_model.py") and kinds[1][0] == "bash" and "db.fit(" in example_blocks()[2][1]


@needs_mpi
@pytest.mark.timeout(600)
def test_the_readme_example_runs_as_written(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}", OPENBLAS_NUM_THREADS="1")
    env.pop("DISTBP_NO_MPI", None)
    outputs = []
    for lang, body in example_blocks():
        first = body.splitlines()[0]
        if lang == "python" and re.fullmatch(r"# [\w/]+\.py", first):
            (tmp_path / first[2:]).write_text(body)
        elif lang == "bash":
            for line in filter(None, body.splitlines()):
                line = line.replace(".venv/bin/mpiexec", MPIEXEC).replace(".venv/bin/python", sys.executable)
                result = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                        timeout=500, check=False)
                assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
                outputs.append(result.stdout)
        else:
            result = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True,
                                    text=True, timeout=500, check=False)
            assert result.returncode == 0, result.stderr[-3000:]
            outputs.append(result.stdout)
    assert "memory-mapped" in outputs[1] and "test accuracy" in outputs[1]
    accuracy, steps = outputs[-1].splitlines()[-1].split()[:2]   # fit prints the run's lines, then this
    assert float(accuracy) > 0.9 and int(steps) > 0
