# Type stubs of the extension module (python/src/lib.rs). The documented
# API is convjit/__init__.py, which converts arguments before calling these.
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

class Error(Exception): ...
class LayerError(Error): ...
class DataError(Error): ...
class CompileError(Error): ...

class Kernel:
    def run(
        self, x: npt.NDArray[np.float32], out: Optional[npt.NDArray[np.float32]] = None
    ) -> npt.NDArray[np.float32]: ...
    def plan_text(self) -> str: ...
    def plan_json(self) -> str: ...
    @property
    def input_shape(self) -> Tuple[int, int, int]: ...
    @property
    def output_shape(self) -> Tuple[int, int, int]: ...
    @property
    def macs(self) -> int: ...
    @property
    def backend(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def winograd(self) -> bool: ...

def compile(
    source: str,
    name: str,
    is_path: bool,
    layer: Optional[str],
    weights: Optional[Dict[str, npt.NDArray[np.float32]]],
    weights_path: Optional[str],
    precision: str,
    threads: Optional[int],
    backend: str,
    winograd: str,
    winograd_tile: Optional[int],
) -> Kernel: ...
class Network:
    def run(
        self, x: npt.NDArray[np.float32], out: Optional[npt.NDArray[np.float32]] = None
    ) -> npt.NDArray[np.float32]: ...
    @property
    def input_shape(self) -> Tuple[int, int, int]: ...
    @property
    def output_shape(self) -> Tuple[int, int, int]: ...
    @property
    def macs(self) -> int: ...
    @property
    def layers(self) -> List[str]: ...
    @property
    def backend(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def threads(self) -> int: ...

def layer_names(source: str, name: str, is_path: bool) -> List[str]: ...
def compile_network(
    layers: List[
        Tuple[
            str,
            str,
            bool,
            Optional[str],
            Optional[Dict[str, npt.NDArray[np.float32]]],
            Optional[str],
        ]
    ],
    precision: str,
    threads: Optional[int],
    backend: str,
    winograd: str,
    winograd_tile: Optional[int],
) -> Network: ...
def interpret(
    source: str,
    name: str,
    is_path: bool,
    layer: Optional[str],
    weights: Optional[Dict[str, npt.NDArray[np.float32]]],
    weights_path: Optional[str],
    precision: str,
    x: Any,
    convert: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]],
) -> npt.NDArray[np.float32]: ...
def import_onnx(
    path: str, input_shape: Optional[Tuple[int, int, int]] = None
) -> Tuple[
    List[
        Tuple[
            str,
            str,
            Dict[str, npt.NDArray[np.float32]],
            Tuple[int, int, int],
            Tuple[int, int, int],
            str,
            str,
        ]
    ],
    List[str],
]: ...
def output_shape(text: str) -> Tuple[int, int, int]: ...
