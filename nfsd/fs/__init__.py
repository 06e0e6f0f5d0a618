"""What the handlers serve: the Backend seam, the real tree (LocalFS), the semantic
layer over it (query and tag directories), handles, acting as the caller."""
