"""Model families, one folder each: ``pix2pix/`` and ``diffusion/``.

A family's folder holds its network, trainer, synthesizer and file format, and its
``__init__`` defines the :class:`~.base.Family` entry (light to import: no torch).
:mod:`.base` holds the types every family builds on. Nothing here picks a family by name:
that is :mod:`napari_synthgen.registry`'s job, the one module above the families.
"""
