#!/usr/bin/env bash
# Step (GitLab host, over SSH): remove everything of the runner this host ran before CI jobs moved to
# their own VMs (components/runners.py): the gitlab-runner unit and container, its configuration,
# the job containers, volumes and networks its docker executor left, and the runner and helper images.
# GitLab's record of that runner goes with its gitlab.UserRunner resource (deleted by the same
# `pulumi up`), which revokes its token. Nothing else on the host is touched: the docker executor
# labels what it makes com.gitlab.gitlab-runner.managed=true (gitlab-runner
# executors/docker/internal/labels/labels.go), and GitLab's own container carries no such label.
# Idempotent: on a host without a runner (every new stack) it finds nothing and changes nothing.
# HOST_ROOT is empty on a host: the step's behaviour tests point it at a scratch directory.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
wait_for_cloud_init

HOST_ROOT="${HOST_ROOT:-}"
UNIT=gitlab-runner.service
UNIT_FILE="${HOST_ROOT}/etc/systemd/system/${UNIT}"
LABEL=com.gitlab.gitlab-runner.managed=true
removed=()

if [[ -f "$UNIT_FILE" ]]; then
  log "stopping and removing ${UNIT}"
  systemctl disable --now --quiet "$UNIT" || log "${UNIT} did not stop cleanly; removing it anyway"
  rm -f "$UNIT_FILE"
  systemctl daemon-reload
  systemctl reset-failed "$UNIT" 2>/dev/null || true
  removed+=("the ${UNIT} unit")
fi

if docker container inspect gitlab-runner >/dev/null 2>&1; then
  docker rm --force gitlab-runner >/dev/null
  removed+=("the gitlab-runner container")
fi

# What the docker executor made for jobs: containers first, then their volumes and networks.
mapfile -t containers < <(docker ps --all --quiet --filter "label=${LABEL}")
if ((${#containers[@]})); then
  docker rm --force --volumes "${containers[@]}" >/dev/null
  removed+=("${#containers[@]} job container(s)")
fi
mapfile -t volumes < <(docker volume ls --quiet --filter "label=${LABEL}")
if ((${#volumes[@]})); then
  docker volume rm --force "${volumes[@]}" >/dev/null
  removed+=("${#volumes[@]} job volume(s)")
fi
mapfile -t networks < <(docker network ls --quiet --filter "label=${LABEL}")
if ((${#networks[@]})); then
  docker network rm "${networks[@]}" >/dev/null
  removed+=("${#networks[@]} job network(s)")
fi

# The runner's image and the helper images it pulled (registry.gitlab.com/gitlab-org/gitlab-runner/
# gitlab-runner-helper), by repository name: by name and tag, or by ID when a newer pull left the
# image untagged (`<none>` is no reference `docker image rm` accepts), each once.
mapfile -t images < <(docker image ls --format '{{.ID}} {{.Repository}} {{.Tag}}' |
  awk '$2 ~ /^((docker\.io\/)?gitlab\/gitlab-runner(-helper)?|registry\.gitlab\.com\/gitlab-org\/gitlab-runner\/gitlab-runner-helper)$/ {
    ref = ($3 == "<none>") ? $1 : $2 ":" $3
    if (!seen[ref]++) print ref
  }')
if ((${#images[@]})); then
  docker image rm --force "${images[@]}" >/dev/null
  removed+=("${#images[@]} runner image(s)")
fi

for path in "${HOST_ROOT}/etc/gitlab-runner" "${HOST_ROOT}/etc/gitops/gitlab-runner.env"; do
  if [[ -e "$path" ]]; then
    rm -rf "$path"
    removed+=("${path#"$HOST_ROOT"}")
  fi
done

if ((${#removed[@]})); then
  log "removed from the GitLab host: $(printf '%s, ' "${removed[@]}" | sed 's/, $//')"
else
  log "no runner on this host: nothing to remove"
fi
