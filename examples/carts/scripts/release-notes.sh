#!/bin/sh
# Prints the release notes of the service being released.
set -eu
echo "Release of ${KEPTN_SERVICE} in ${KEPTN_STAGE} (project ${KEPTN_PROJECT})"
