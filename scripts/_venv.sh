# Shared by scripts/test and scripts/sandbox: make .venv and install the project with an extra.
# Installs again only when pyproject.toml changed since the last install of that extra.
ensure_venv() {
    local extra=$1
    local python=${PYTHON:-python3}
    if [ ! -x .venv/bin/python ]; then
        echo "Creating .venv with $($python --version)"
        "$python" -m venv .venv
    fi
    local stamp=".venv/.installed-$extra"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "Installing RelayForge with the '$extra' extra into .venv"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extra]"
        echo "$want" > "$stamp"
    fi
}
