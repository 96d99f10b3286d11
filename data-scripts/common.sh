# Shared by the download scripts (sourced, not run): `fetch URL FILE` and a temporary directory `tmp`
# that is removed on exit.
fetch() {
  if command -v wget > /dev/null; then
    wget -q -O "$2" "$1"
  else
    curl -fsSL -o "$2" "$1"
  fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
