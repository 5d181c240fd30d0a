#!/usr/bin/env bash
# The engine as an outside researcher gets it: build a wheel, install it into a fresh virtual environment outside
# the checkout, and run the README's library example and `layerfusion extract` with a profile given by path.
#
# No network: the wheel is built without build isolation (setuptools from the project's venv), installed with
# --no-index --no-deps, and its dependencies are the pinned ones already installed in the project's venv, made
# visible to the fresh venv by a plain path entry (.pth) so nothing is downloaded twice. That entry does not run the
# project venv's own .pth files, so its editable install of layerfusion stays invisible: `import layerfusion` must
# come from the wheel (checked). Usage: .ci/wheel_check.sh [project venv] (default .venv); needs
# $LAYERFUSION_DATA_DIR (the README example reads SST-2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CHECKOUT="$(pwd)"
PROJECT_VENV="$(cd "${1:-.venv}" && pwd)"
PY="$PROJECT_VENV/bin/python"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/layerfusion-wheel-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
unset PYTHONPATH

: "${LAYERFUSION_DATA_DIR:?set LAYERFUSION_DATA_DIR to the folder holding sst2/ (the README example reads it)}"

echo "wheel: building from $CHECKOUT"
"$PY" -m pip wheel --no-deps --no-build-isolation --quiet --wheel-dir "$WORK/dist" "$CHECKOUT"
rm -rf "$CHECKOUT/build"
WHEEL="$(ls "$WORK"/dist/layerfusion-*.whl)"
echo "wheel: $(basename "$WHEEL")"

"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --no-index --no-deps "$WHEEL"
SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/zz_project_dependencies.pth"

mkdir -p "$WORK/run"
cd "$WORK/run"
VPY="$WORK/venv/bin/python"
"$VPY" - "$CHECKOUT" <<'PY'
import importlib.metadata as md
import sys
from pathlib import Path

import layerfusion

checkout = Path(sys.argv[1]).resolve()
where = Path(layerfusion.__file__).resolve()
assert checkout not in where.parents, f"layerfusion imported from the checkout ({where}), not the wheel"
assert md.version("layerfusion") == layerfusion.__version__, (md.version("layerfusion"), layerfusion.__version__)
from layerfusion.study import profiles

assert set(profiles.available()) >= {"ci", "default"}, profiles.available()
print(f"wheel: layerfusion {layerfusion.__version__} from {where.parent}; shipped profiles {profiles.available()}")
PY

echo "wheel: the README's library example"
"$VPY" - "$CHECKOUT/README.md" <<'PY'
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
section = text.split("## The library in five lines", 1)[1]
code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
exec(compile(code, "README.md", "exec"))
scores = lp.val_scores_  # noqa: F821 - defined by the README's code
print(f"wheel: README example ran; {len(scores)} layer scores, best validation accuracy {max(scores):.3f}")
PY

echo "wheel: layerfusion extract --profile <path>"
cp "$CHECKOUT/params/ci.yaml" "$WORK/run/my-profile.yaml"
"$WORK/venv/bin/layerfusion" extract --profile "$WORK/run/my-profile.yaml" --quiet --out "$WORK/run/extraction.csv"
test -s "$WORK/run/extraction.csv"
echo "wheel: ok"
