#!/bin/sh
# The Nozzle image's entrypoint. Fly (and Docker) mount volumes owned by
# root over /data and /models, whatever the image made them: as root, give
# the service user the folders it writes (not their contents: a 100 GB
# model is only read), then run the command as that user.
set -e
if [ "$(id -u)" = 0 ]; then
	for d in /data /models /models/cache; do
		[ -d "$d" ] || [ "$d" = /models/cache -a -d /models ] && mkdir -p "$d" && chown nozzle:nozzle "$d"
	done
	exec setpriv --reuid=nozzle --regid=nozzle --init-groups -- "$@"
fi
exec "$@"
