# Source from the repo root on the offline GPU host: installs the carried header wheels (.whl/,
# fetched here by ../shared/gpu-host/fetch-wheels.sh) into /tmp/site and puts /tmp/site and the
# repo on PYTHONPATH so `import jitkern` and `python -m jitkern.cli` work without a build.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export JITKERN_CACHE_DIR=${JITKERN_CACHE_DIR:-/tmp/jitkern-cache}
export PATH="$PATH:/tmp/site/bin"
jitkern() { python3 -m jitkern.cli "$@"; }
