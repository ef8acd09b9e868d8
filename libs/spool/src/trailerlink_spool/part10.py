"""The DICOM Part 10 envelope the spool stores around the dataset bytes as received.

A spool file's plaintext is ``preamble (128 zero bytes) + b"DICM" + File Meta
Information (group 0002, explicit VR little endian) + dataset bytes``, where the
dataset bytes are exactly those the modality sent on the wire, in its transfer
syntax. ``ObjectReceived.file_sha256`` covers the whole plaintext,
``dataset_sha256`` only the bytes after group 0002: the identity checked downstream.
"""

from __future__ import annotations

import struct

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

PREAMBLE = b"\x00" * 128
MAGIC = b"DICM"
# trailerlink's implementation class UID (a UUID-derived 2.25 root).
IMPLEMENTATION_CLASS_UID = "2.25.147690240616256749975763867611665917858"
IMPLEMENTATION_VERSION_NAME = "TRAILERLINK_01"


class NotPart10Error(ValueError):
    """The bytes do not start with a DICOM Part 10 preamble and file meta."""


def file_meta_bytes(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str = "",
) -> bytes:
    """Preamble, ``DICM`` and the encoded File Meta Information for one object."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae_title:
        meta.SourceApplicationEntityTitle = source_ae_title
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return PREAMBLE + MAGIC + buffer.getvalue()


def dataset_offset(head: bytes) -> int:
    """Byte offset of the dataset in a Part 10 file whose first bytes are ``head``.

    ``head`` must hold at least the preamble and the whole file meta (a few hundred
    bytes; 64 KiB is plenty). Raises :class:`NotPart10Error` otherwise.
    """
    if len(head) < 132 or head[128:132] != MAGIC:
        raise NotPart10Error("no DICM prefix")
    pos = 132
    # Walk group 0002 (explicit VR little endian) rather than trusting the group
    # length alone, so a file written without (0002,0000) is handled too.
    while pos + 4 <= len(head):
        group, _element = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            return pos
        if pos + 8 > len(head):
            break
        vr = head[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            if pos + 12 > len(head):
                break
            (length,) = struct.unpack_from("<I", head, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            pos += 8 + length
    raise NotPart10Error("file meta longer than the bytes given")
