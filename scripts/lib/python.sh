# Sourced by scripts/quickstart.sh and scripts/run-tests.sh: which Python creates .venv.
#
# $PYTHON if given; else Debian's /usr/bin/python3 (the python3 package these scripts
# install) when it is 3.11 or newer; else the first python3 on PATH.  Debian's interpreter
# is preferred over whatever PATH finds first (pyenv, a hand-built one) because the server's
# speed is its interpreter's: Debian builds CPython with profile-guided optimisation and
# link-time optimisation and links libpython into the executable; a default source build
# (pyenv's, ./configure --enable-shared without --enable-optimizations) served the same
# calls with 10-25 % more CPU on this machine (docs/running.rst, "Which Python").
pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo /usr/bin/python3
    else
        echo python3
    fi
}
