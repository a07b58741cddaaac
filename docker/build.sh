#!/usr/bin/env bash
# Build the fleet's container images (`make images`).
#
#   REGISTRY   image prefix                     (default ghcr.io/modelfleet)
#   TAG        version part of the tag          (default: the version in pyproject.toml)
#   VARIANTS   "cpu", "cuda" or "cpu cuda"      (default cpu; the gateway is always cpu only)
#   SERVICES   which images                     (default: the five processes and the toolkit)
#   PUSH=1     push after building
#   DOCKER     the client                       (default docker; podman works too)
#
# Images are named $REGISTRY/modelfleet-<service>:$TAG-<variant>, which is what the chart's
# image.repository / image.tag / image.variant values point at.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
REGISTRY=${REGISTRY:-ghcr.io/modelfleet}
VARIANTS=${VARIANTS:-cpu}
SERVICES=${SERVICES:-gateway llm embedding classification generation toolkit}
TAG=${TAG:-$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)}

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  echo "make images: '$DOCKER' is not installed. Building the images needs a Docker engine" >&2
  echo "(or set DOCKER=podman). Nothing was built." >&2
  exit 1
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "make images: '$DOCKER' is installed but no engine answers (is the daemon running," >&2
  echo "and may this user use it?). Nothing was built." >&2
  exit 1
fi

# The toolkit (the chart's training and tuning Jobs) serves nothing; its PORT is unused.
declare -A PORT=([gateway]=8080 [llm]=3002 [embedding]=3003 [classification]=3004 [generation]=3005 [toolkit]=8080)
declare -A DEPS=([gateway]=gateway [toolkit]=toolkit)

built=()
for variant in $VARIANTS; do
  case "$variant" in cpu|cuda) ;; *) echo "unknown variant '$variant' (cpu or cuda)" >&2; exit 2 ;; esac
  for service in $SERVICES; do
    [[ -n "${PORT[$service]:-}" ]] || { echo "unknown service '$service'" >&2; exit 2; }
    if [[ "$service" == gateway && "$variant" == cuda ]]; then
      continue  # the gateway runs no model
    fi
    image="$REGISTRY/modelfleet-$service:$TAG-$variant"
    echo "==> $image"
    DOCKER_BUILDKIT=1 "$DOCKER" build \
      --file docker/Dockerfile \
      --build-arg "SERVICE=$service" \
      --build-arg "VARIANT=$variant" \
      --build-arg "PORT=${PORT[$service]}" \
      --build-arg "DEPS=${DEPS[$service]:-model}" \
      --tag "$image" \
      .
    built+=("$image")
  done
done

if [[ "${PUSH:-0}" == 1 ]]; then
  for image in "${built[@]}"; do
    "$DOCKER" push "$image"
  done
fi
printf 'built:\n'
printf '  %s\n' "${built[@]}"
