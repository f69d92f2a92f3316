#!/usr/bin/env bash
# Library of the backup programs (components/backups.py BACKUP_LIBS), sent after userdata/lib/common.sh:
# the S3 calls of the GitLab and etcd backups and restores. Defines functions only.

# shellcheck shell=bash
# aws_s3 ARGS...: the AWS CLI, against S3_ENDPOINT_URL when set (the tests' S3 API on loopback).
aws_s3() {
  local endpoint=()
  [[ -z "${S3_ENDPOINT_URL:-}" ]] || endpoint=(--endpoint-url "$S3_ENDPOINT_URL")
  aws "${endpoint[@]}" "$@"
}

# upload FILE URL [aws s3 cp options]: three attempts (a network blip; a role policy made seconds ago).
upload() {
  local file="$1" url="$2" attempt
  shift 2
  for attempt in 1 2 3; do
    aws_s3 s3 cp "$file" "$url" --only-show-errors "$@" >&2 && return 0
    ((attempt == 3)) || sleep $((attempt * 10))
  done
  die "upload to ${url} failed (3 attempts)"
}
