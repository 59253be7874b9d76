#!/usr/bin/env bash
# The alerts of the chart (charts/pgpilot/files/alerts.yaml) checked and unit-tested with
# promtool (e2e/promtool/alerts_test.yaml), and every runbook they link exists in docs/.
# promtool comes from Debian's prometheus package (bookworm), unpacked once into
# ~/.cache/pgpilot/promtool-<version>/.
# shellcheck source=SCRIPTDIR/../../images/lib.sh
source "$(dirname "$0")/../../images/lib.sh"
REPO=$(cd "$IMAGES_DIR/.." && pwd)
RULES=$REPO/charts/pgpilot/files/alerts.yaml

PKG=$(apt_resolve bookworm prometheus | grep '^prometheus=') || die "cannot resolve prometheus in bookworm"
DIR=$CACHE/promtool-${PKG#prometheus=}
if [[ ! -x $DIR/usr/bin/promtool ]]; then
  workdir
  deb_extract bookworm "$WORK/root" "$PKG"
  mkdir -p "$DIR/usr/bin"
  cp "$WORK/root/usr/bin/promtool" "$DIR/usr/bin/promtool.part"
  mv "$DIR/usr/bin/promtool.part" "$DIR/usr/bin/promtool"
fi
PROMTOOL=$DIR/usr/bin/promtool

"$PROMTOOL" check rules "$RULES"
(cd "$REPO/e2e/promtool" && "$PROMTOOL" test rules alerts_test.yaml)
absent=0
while read -r doc; do
  if [[ ! -f $REPO/docs/runbooks/$doc ]]; then
    log "runbook docs/runbooks/$doc (linked by an alert) does not exist"
    absent=1
  fi
done < <(grep -o 'docs/runbooks/[a-z-]*\.md' "$RULES" | sed 's|docs/runbooks/||' | sort -u)
exit "$absent"
