#!/bin/bash
# The seed article's claude.sh as bench/project_launch.py runs it: the same
# steps in the same order, with only these changes, each needed to time it
# beside hutch on the same image:
# - the image is $SEED_IMAGE (hutch's, so both launch the same image) and is
#   never built here: the bench checks it exists before timing anything;
# - no -it (the bench has no terminal) and --network none (as the bare
#   baseline; the article's default bridge network would only make the seed
#   slower);
# - the entrypoint is $SEED_ENTRYPOINT (the article's entrypoint.sh with its
#   sudo, absent from hutch's image, replaced by setpriv: see
#   seed_entrypoint in project_launch.py), mounted read-only and named with
#   --entrypoint.
# Its cost in a big project is the entrypoint's `chown -R` of /workspace.
set -xe
IMAGE_NAME="$SEED_IMAGE"
# Build the image if it doesn't exist
if ! docker image inspect "$IMAGE_NAME" &> /dev/null; then
echo "Image $IMAGE_NAME not found." >&2
exit 1
fi
# Ensure Claude config directory and file exist
mkdir -p "$HOME/.claude"
touch "$HOME/.claude.json"
# Run Claude Code in Docker container
docker run --rm --network none \
-e HOST_UID="$(id -u)" \
-e HOST_GID="$(id -g)" \
-e HOST_USER="$USER" \
-e HOST_HOME="/home/$USER" \
-v "$PWD:/workspace" \
-v "$HOME/.claude:/home/$USER/.claude" \
-v "$HOME/.claude.json:/home/$USER/.claude.json" \
-v "$SEED_ENTRYPOINT:/seed-entrypoint.sh:ro" \
--entrypoint /seed-entrypoint.sh \
-w /workspace \
"$IMAGE_NAME" "$@"
