# The exact versions locked in $LOCK/package-lock.json, with npm ci. The JavaScript builds use
# componentize-js and the C builds `jco new` from the same folder, so it always gets both.
if ! cmp -s "$LOCK/package-lock.json" "$NODE_DIR/package-lock.json" ||
   [ ! -x "$NODE_DIR/node_modules/.bin/componentize-js" ] || [ ! -x "$NODE_DIR/node_modules/.bin/jco" ]; then
  echo "installing componentize-js + jco ($LOCK/package-lock.json) into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  cp "$LOCK/package.json" "$LOCK/package-lock.json" "$NODE_DIR/"
  for _ in 1 2; do # npm ci has once exited 0 without linking .bin/: retry once
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    [ -x "$NODE_DIR/node_modules/.bin/componentize-js" ] && [ -x "$NODE_DIR/node_modules/.bin/jco" ] && break
  done
  for b in componentize-js jco; do
    [ -x "$NODE_DIR/node_modules/.bin/$b" ] || { echo "npm ci did not install $b" >&2; exit 1; }
  done
fi
