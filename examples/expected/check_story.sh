#!/usr/bin/env bash
# check_story.sh OUTPUT REFERENCE: OUTPUT (generate_text's text from the beginning-of-text token,
# greedy) must be a non-trivial prefix of REFERENCE, the story llama2.c's run.c prints for the same
# model with temperature 0 (models/stories260K/reference_greedy_runc.txt).
set -euo pipefail
out=$(cat "$1")
ref=$(cat "$2")
if [ ${#out} -lt 40 ]; then
  echo "check_story: only ${#out} characters generated: '$out'" >&2
  exit 1
fi
if [ "${ref:0:${#out}}" != "$out" ]; then
  echo "check_story: the generated text is not the start of the reference story" >&2
  echo "generated: $out" >&2
  echo "reference: ${ref:0:${#out}}" >&2
  exit 1
fi
echo "check_story: ${#out} characters equal run.c's story"
