"""trailerlink gateway: DICOM C-STORE/commitment gateway into the durable encrypted spool."""

__version__ = "0.1.0"
