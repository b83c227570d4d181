"""The backend boundary: everything that talks to Vagrant or libvirt.

`vagrant_driver` is the only module that imports python-vagrant and
`libvirt_inspect` the only one that imports libvirt-python; the rest of kubelab
uses their small classes and never the libraries themselves.
"""
