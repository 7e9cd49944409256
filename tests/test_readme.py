"""The README's Python example runs as written (with fewer steps), and its two commands exist."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)
    assert blocks, "README has no Python example"
    code = blocks[0]
    assert "model.fit" in code
    # Same code, two steps instead of a hundred and a smaller model, so the test takes seconds.
    code = code.replace("steps_per_epoch=100", "steps_per_epoch=2")
    code = code.replace("shape=(64, 64)", "shape=(32, 32)").replace("channels=16", "channels=4")
    code = code.replace("n=16, shape=(64, 64, 64)", "n=6, shape=(32, 32, 32)")
    code = code.replace("context_size=(1, 8)", "context_size=(1, 3)")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    history = namespace["model"].history.history
    assert len(history["loss"]) == 1 and history["loss"][0] == history["loss"][0]  # not NaN


def test_two_commands_are_make_targets():
    readme = _readme()
    commands = re.search(r"## Two commands\n\n```bash\n(.*?)```", readme, flags=re.S).group(1)
    targets = [line.split()[1] for line in commands.strip().splitlines()]
    assert targets == ["demo", "test"]
    with open(os.path.join(REPO, "Makefile")) as f:
        makefile = f.read()
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert "make test" in f.read()
