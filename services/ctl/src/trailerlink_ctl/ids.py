"""The shapes of the identifiers more than one command accepts."""

from __future__ import annotations

import re

# A trailer id is a DNS label: it names the trailer's namespace and certificate.
TRAILER_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# A DICOM UID (SOP Instance, Study Instance): digits and dots, at most 64 characters.
DICOM_UID = re.compile(r"^[0-9.]{1,64}$")
