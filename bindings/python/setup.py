"""Builds terminals._terminals with the project's CMake build (the repository root is two
directories up) and puts it into the package. Used by `pip install ./bindings/python`.

Environment: TERMINALS_CMAKE_ARGS (extra configure arguments), TERMINALS_BUILD_DIR (reuse a
build directory), CMAKE_BUILD_PARALLEL_LEVEL (jobs)."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if not (ROOT / "CMakeLists.txt").exists():
            raise RuntimeError(f"the libterminals source tree is not at {ROOT}")
        build = pathlib.Path(os.environ.get("TERMINALS_BUILD_DIR") or (pathlib.Path(self.build_temp) / "cmake"))
        build.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DTERMINALS_BUILD_PYTHON=ON", "-DTERMINALS_BUILD_TESTS=OFF",
            "-DTERMINALS_BUILD_EXAMPLES=OFF", "-DTERMINALS_BUILD_BENCH=OFF", "-DTERMINALS_INSTALL=OFF",
            f"-DPython_EXECUTABLE={sys.executable}", f"-DPYTHON_EXECUTABLE={sys.executable}",
        ]
        try:  # pybind11 from the build environment (pip), else the system's CMake package
            import pybind11
            configure.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass
        configure += shlex.split(os.environ.get("TERMINALS_CMAKE_ARGS", ""))
        subprocess.check_call(configure)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        # The agent goes into the package too: Orchestrator and Server need it next to nothing
        # else (TERMINALS_AGENT_PATH or agent_path= point at it; see terminals.agent_path()).
        subprocess.check_call(["cmake", "--build", str(build), "--target", "_terminals", "terminals-agent",
                               "-j", jobs])
        target = pathlib.Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        shutil.copy2(build / "bindings" / "python" / "terminals" / f"_terminals{suffix}", target)
        shutil.copy2(build / "cli" / "terminals-agent", target.parent / "terminals-agent")


setup(ext_modules=[CMakeExtension("terminals._terminals")], cmdclass={"build_ext": CMakeBuild})
