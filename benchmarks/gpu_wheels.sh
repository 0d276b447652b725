#!/usr/bin/env bash
# Wheels for what the GPU machine lacks and the server stage of the GPU check needs (flask, gunicorn,
# prometheus_client and their dependencies), for its Python 3.12 on x86-64, downloaded here into .whl/ (ignored
# by git). The device tool carries .whl/ to the card (carry: [".whl"]), where gpu_check.sh installs them into
# /tmp/site without the network before it starts. gunicorn is the version setup.py pins (sie.server.worker builds
# on its threaded worker's internals).
#
#   bash benchmarks/gpu_wheels.sh          # here, once; a few MB
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PACKAGES=(flask==3.1.3 werkzeug==3.1.3 jinja2==3.1.6 itsdangerous==2.2.0 click==8.2.1 blinker==1.9.0
          markupsafe==3.0.2 gunicorn==27.0.1 packaging==25.0 prometheus_client==0.22.1)
rm -rf .whl && mkdir -p .whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${PACKAGES[@]}"
ls -1 .whl
