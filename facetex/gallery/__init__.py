"""An offline HTML gallery of face reconstructions with a WebGL 3D viewer (see ``pages`` for the layout).

``build_gallery(run_folder)`` writes an overview of every photo folder in a run and a page per photo;
``write_texture_maps`` and ``write_photo`` write the optional per-photo files the pages show.
"""
from facetex.gallery.maps import write_texture_maps
from facetex.gallery.pages import GalleryError, build_gallery
from facetex.gallery.photo import write_photo

__all__ = ["GalleryError", "build_gallery", "write_texture_maps", "write_photo"]
