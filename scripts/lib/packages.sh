# Sourced by scripts/*.sh: installs missing Debian packages when run as root.
# Usage: ensure_packages pkg...

ensure_packages() {
  local missing=()
  local package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "sinkkv: missing Debian packages: ${missing[*]}" >&2
    echo "sinkkv: install them with: sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "sinkkv: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
