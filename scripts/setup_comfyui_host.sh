#!/usr/bin/env bash
# Install what a ComfyUI checkout needs to run headless on the CPU beside the
# python's existing torch build, without replacing that torch.
#
# Usage: scripts/setup_comfyui_host.sh [COMFYUI_DIR] [--browser]
#   COMFYUI_DIR  an existing ComfyUI folder (main.py, requirements.txt);
#                defaults to $COMFYUI_PATH.
#   --browser    also install Debian's chromium and chromium-driver and the
#                selenium client for the browser test (needs root for apt-get).
# Environment: PYTHON (default: python) is the interpreter to install into.
#
# What it does:
#   1. pip-installs ComfyUI's requirements.txt minus torch, torchvision,
#      torchaudio and spandrel, plus requests and websocket-client, with the
#      installed torch pinned as a constraint so nothing upgrades it.
#   2. spandrel with --no-deps, because its torchvision requirement would pull
#      a torch build of its own.
#   3. If torchvision does not import, installs the torchvision release that
#      matches the installed torch into COMFYUI_DIR/faststar_host_site with
#      --no-deps, plus scripts/host_site/sitecustomize.py, which lets that
#      CUDA-linked wheel import beside a CPU torch. Processes that need it
#      (the ComfyUI server, in-process node tests) put that folder on
#      PYTHONPATH; the host tests do so themselves.
# torchaudio is not installed: without it ComfyUI logs import failures for its
# two audio node files and runs everything else.
set -euo pipefail

PYTHON="${PYTHON:-python}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

comfy_dir="${COMFYUI_PATH:-}"
with_browser=0
for arg in "$@"; do
    case "$arg" in
        --browser) with_browser=1 ;;
        -*) echo "unknown option: $arg (expected --browser)" >&2; exit 2 ;;
        *) comfy_dir="$arg" ;;
    esac
done

if [[ -z "$comfy_dir" ]]; then
    echo "no ComfyUI folder given: pass it as the first argument or set COMFYUI_PATH" >&2
    exit 2
fi
if [[ ! -f "$comfy_dir/main.py" || ! -f "$comfy_dir/requirements.txt" ]]; then
    echo "$comfy_dir is not a ComfyUI folder (main.py or requirements.txt missing)" >&2
    exit 2
fi
comfy_dir="$(cd "$comfy_dir" && pwd)"

torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')" || {
    echo "torch does not import in $PYTHON: install torch first (for example pip install torch==2.13.0)" >&2
    exit 1
}
echo "torch $torch_version found; it stays as it is"

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

# Step 1: ComfyUI's requirements without the torch family.
grep -vE '^[[:space:]]*(torch|torchvision|torchaudio|spandrel)[[:space:]]*$' \
    "$comfy_dir/requirements.txt" > "$work_dir/requirements.txt"
echo "torch==$torch_version" > "$work_dir/constraints.txt"
"$PYTHON" -m pip install --quiet -r "$work_dir/requirements.txt" \
    requests websocket-client -c "$work_dir/constraints.txt"

# Step 2: spandrel (upscale-model node) without its torchvision requirement.
"$PYTHON" -m pip install --quiet --no-deps spandrel

# Step 3: torchvision, only when the interpreter has no working one.
site_dir="$comfy_dir/faststar_host_site"
if "$PYTHON" -c 'import torchvision' > /dev/null 2>&1; then
    echo "torchvision imports already; $site_dir not needed"
elif [[ -f "$site_dir/sitecustomize.py" ]] && cmp -s "$SCRIPT_DIR/host_site/sitecustomize.py" "$site_dir/sitecustomize.py" \
        && PYTHONPATH="$site_dir" "$PYTHON" -c 'import torchvision.transforms' > /dev/null 2>&1; then
    echo "torchvision in $site_dir imports already"
else
    torch_minor="$(echo "$torch_version" | cut -d. -f2)"
    # torchvision 0.N pairs with torch 2.(N-15), e.g. 0.28 with 2.13.
    torchvision_version="0.$((torch_minor + 15)).*"
    echo "installing torchvision==$torchvision_version into $site_dir"
    mkdir -p "$site_dir"
    "$PYTHON" -m pip install --quiet --no-deps --upgrade --target "$site_dir" \
        "torchvision==$torchvision_version"
    cp "$SCRIPT_DIR/host_site/sitecustomize.py" "$site_dir/sitecustomize.py"
    PYTHONPATH="$site_dir" "$PYTHON" -c 'import torchvision.transforms' || {
        echo "torchvision in $site_dir still does not import" >&2
        exit 1
    }
fi

if [[ "$with_browser" == 1 ]]; then
    if ! command -v chromium > /dev/null || ! command -v chromedriver > /dev/null; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
    fi
    "$PYTHON" -m pip install --quiet selenium
fi

echo "ComfyUI host ready: $comfy_dir"
