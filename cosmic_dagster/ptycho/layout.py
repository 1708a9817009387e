"""Dataset paths of COSMIC's preprocessed CXI files (as the acme preprocessor writes them).

Shared by the reader and the simulator so the two cannot drift apart. Units as stored: lengths in
metres, energy in joules, translations are *sample* positions ``[x, y, z]`` (the negative of the
illumination position).
"""

from __future__ import annotations

CXI_VERSION = 140

DETECTOR = "/entry_1/instrument_1/detector_1"
SOURCE = "/entry_1/instrument_1/source_1"
GEOMETRY = "/entry_1/sample_1/geometry_1"

FRAMES = f"{DETECTOR}/data"
FRAMES_LINK = "/entry_1/data_1/data"
TRANSLATION = f"{GEOMETRY}/translation"
TRANSLATION_LINKS = ("/entry_1/data_1/translation", f"{DETECTOR}/translation")
ENERGY_J = f"{SOURCE}/energy"
DISTANCE_M = f"{DETECTOR}/distance"
X_PIXEL_SIZE_M = f"{DETECTOR}/x_pixel_size"
Y_PIXEL_SIZE_M = f"{DETECTOR}/y_pixel_size"
BASIS_VECTORS = f"{DETECTOR}/basis_vectors"
CORNER_POSITION = f"{DETECTOR}/corner_position"
MASK = f"{DETECTOR}/mask"
#: Mask values of usable pixels (as cdtools reads COSMIC masks); any other value marks a bad pixel.
MASK_USABLE_VALUES = (0, 0x1000)
METADATA = "/metadata"
VERSION = "/cxi_version"

#: Where acme stores the initial illumination (all five hold the same array); read in this order.
PROBE_GUESS_PATHS = (
    f"{SOURCE}/illumination",
    f"{SOURCE}/probe",
    f"{SOURCE}/data_illumination",
    f"{DETECTOR}/probe",
    f"{DETECTOR}/data_illumination",
)

#: Simulation only, deliberately outside every COSMIC group: the object and probe used to simulate.
GROUND_TRUTH_OBJECT = "/entry_1/sample_1/ground_truth/object"
GROUND_TRUTH_PROBE = "/entry_1/sample_1/ground_truth/probe"
#: Attribute of the ground-truth object: (row, column) of the pixel at translation zero.
GROUND_TRUTH_ORIGIN_ATTR = "translation_origin_px"
