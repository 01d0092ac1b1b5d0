"""The OCI and Docker formats lamina reads and writes: the reference grammar (``reference``) and
the strict JSON documents of the image and distribution specs (``formats``). Pure data: no store,
no I/O beyond what a caller hands in."""
