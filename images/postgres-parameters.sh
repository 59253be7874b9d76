#!/usr/bin/env bash
# Writes crates/pgpilot-api/src/parameters/pg<major>.tsv: every parameter the
# PostgreSQL of our image knows, asked of that PostgreSQL itself. The operator checks
# spec.postgresql.parameters against it (CEL at admission, the controller before Patroni).
#
#   pg_settings   name, type, context, unit, min, max, documented enum values, from a
#                 single-user backend with the contrib libraries that define parameters
#                 preloaded (their prefixes become known, so typos under them are caught)
#   probes        each enum with the undocumented spellings PostgreSQL also accepts (on/off
#                 synonyms, "debug", "info", ...): SET for those a session may set, postgres
#                 -C for the others; then Patroni's own validator, which drops some of them
#
# Usage: images/postgres-parameters.sh 17|15.20   (builds or reuses the image)
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

TAG=${1:?usage: $0 17|15.20}
MAJOR=${TAG%%.*}
OUT=$IMAGES_DIR/../crates/pgpilot-api/src/parameters/pg$MAJOR.tsv
# Contrib modules with parameters (sepgsql needs SELinux; plpgsql is always there).
LIBS=(auth_delay auto_explain basebackup_to_shell basic_archive isn passwordcheck pg_prewarm
  pg_stat_statements pg_trgm plpgsql postgres_fdw)
HIDDEN=(on off true false yes no 1 0 debug info archive hot_standby)

need_pkgs jq
TARBALL=$("$IMAGES_DIR/postgres/build.sh" "$TAG")
workdir
ROOT=$WORK/rootfs
mkdir -p "$WORK/oci" "$ROOT"
tar -xf "$TARBALL" -C "$WORK/oci"
manifest=$(jq -r '.manifests[0].digest' "$WORK/oci/index.json")
while read -r layer; do
  tar -xzf "$WORK/oci/blobs/${layer/://}" -C "$ROOT"
done < <(jq -r '.layers[].digest' "$WORK/oci/blobs/${manifest/://}")
mknod -m 666 "$ROOT/dev/null" c 1 3

BIN=/usr/lib/postgresql/$MAJOR/bin
as_postgres() { chroot --userspec=999:999 "$ROOT" env LANG=C.UTF-8 "$@"; }
as_postgres "$BIN/initdb" -D /tmp/pgdata -A trust -U postgres >/dev/null
version=$(as_postgres "$BIN/postgres" --version)
preload=()
for lib in "${LIBS[@]}"; do
  [[ -e $ROOT/usr/lib/postgresql/$MAJOR/lib/$lib.so ]] && preload+=("$lib")
done

preload_option=shared_preload_libraries=$(IFS=,; echo "${preload[*]}")
hidden_array="array[$(printf "'%s'," "${HIDDEN[@]}" | sed 's/,$//')]"
# One statement per line (a single-user backend ends a query at a newline); rows come
# '|'-separated, as read would merge the empty fields of tab-separated lines. Enums a
# session may SET (extensions' included: -C cannot load them) are probed here with
# set_config; the others below with -C.
out=$(as_postgres "$BIN/postgres" --single -D /tmp/pgdata -c "$preload_option" postgres 2>/dev/null <<SQL | sed 's/^backend> //'
copy (select 'S', name, vartype, context, coalesce(unit, ''), coalesce(min_val, ''), coalesce(max_val, ''), coalesce(array_to_string(enumvals, ','), '') from pg_settings order by lower(name)) to stdout with (delimiter '|')
create function pg_temp.accepts(n text, v text) returns bool language plpgsql as \$\$ begin perform set_config(n, v, true); return true; exception when others then return false; end \$\$
copy (select 'H', name, v from pg_settings, unnest($hidden_array) v where vartype = 'enum' and context in ('user', 'superuser') and not v = any(enumvals) and pg_temp.accepts(name, v)) to stdout with (delimiter '|')
SQL
)
rows=$(grep '^S|' <<<"$out" | cut -d'|' -f2-)
settable_hidden=$(grep '^H|' <<<"$out" | cut -d'|' -f2-)
[[ $(wc -l <<<"$rows") -gt 300 ]] || die "pg_settings gave only $(wc -l <<<"$rows") rows"

# Every spelling PostgreSQL accepts for each enum.
enum_values=$(while IFS='|' read -r name type context _ _ _ values; do
  [[ $type == enum ]] || continue
  IFS=, read -ra accepted <<<"$values"
  for v in "${HIDDEN[@]}"; do
    [[ ,$values, == *",$v,"* ]] && continue
    if [[ $context == user || $context == superuser ]]; then
      grep -qxF "$name|$v" <<<"$settable_hidden" && accepted+=("$v")
    # -C parses the value as the server would at startup, then prints it.
    elif as_postgres "$BIN/postgres" -D /tmp/pgdata -C "$name" -c "$name=$v" >/dev/null 2>&1; then
      accepted+=("$v")
    fi
  done
  printf "$name|%s\n" "${accepted[@]}"
done <<<"$rows")
# ... of which Patroni, which writes postgresql.conf, keeps: it drops some that PostgreSQL
# would take (client_min_messages=debug, enable_seqscan=t), so those are refused too.
cat >"$ROOT/tmp/patroni-keeps.py" <<PY
import sys
from patroni.postgresql.validator import transform_postgresql_parameter_value as keep
version = $MAJOR * 10000
for line in sys.stdin:
    name, value = line.rstrip("\n").split("|", 1)
    if keep(version, name, value, {name}) is not None:
        print(f"{name}|{value}")
PY
enum_values=$(chroot_run "$ROOT" python3 /tmp/patroni-keeps.py <<<"$enum_values" 2>/dev/null)

mkdir -p "$(dirname "$OUT")"
{
  echo "# $version: parameters from pg_settings (preloaded: ${preload[*]});"
  echo "# enums list the spellings both PostgreSQL and Patroni $(chroot_run "$ROOT" patroni --version | cut -d' ' -f2) accept."
  echo "# Generated by images/postgres-parameters.sh $TAG."
  echo "# name	type	context	unit	min	max	accepted values (enum)"
  while IFS='|' read -r name type context unit min max values; do
    if [[ $type == enum ]]; then
      values=$(awk -F'|' -v n="$name" '$1 == n {print $2}' <<<"$enum_values" | paste -sd,)
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$type" "$context" "$unit" "$min" "$max" "$values"
  done <<<"$rows"
} >"$OUT.part"
mv "$OUT.part" "$OUT"
log "wrote $OUT ($(grep -vc '^#' "$OUT") parameters, $version)"
