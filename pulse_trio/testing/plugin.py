"""pytest plugin of pulse-trio: servers, clients, faults and unique names as fixtures.

Installed with the package (a ``pytest11`` entry point), it only defines fixtures: nothing
starts until a test asks for one, and no hook or option of pytest is changed. Every fixture
name starts with ``pulse_``.

==========================  ========  ==========================================================
Fixture                     Scope     What the test gets
==========================  ========  ==========================================================
``pulse_server``            test      URL of a server shared by the session (started on first
                                      use); the data written by the test is flushed after it
``pulse_client``            test      a :class:`pulse_trio.Client` on ``pulse_server``, opened in
                                      the test's event loop, named ``pulse_name``
``pulse_killable_server``   test      an :class:`~pulse_trio.testing.EmbeddedServer` of the test's
                                      own (AOF on): ``kill``, ``restart``, ``pause``, ``resume``
``pulse_cluster``           test      URL of a 3-master Redis Cluster shared by the session
                                      (started on first use), flushed after the test
``pulse_cluster_client``    test      a client on ``pulse_cluster``
``pulse_proxy``             test      a :class:`~pulse_trio.testing.FaultProxy` in front of
                                      ``pulse_server`` (connect to ``pulse_proxy.url``)
``pulse_name``              test      a name no other test uses (valid for maps, streams, sinks,
                                      pools)
==========================  ========  ==========================================================

The async fixtures run in the test's event loop, with the AnyIO pytest plugin (tests marked
``@pytest.mark.anyio``, either backend) and with pytest-trio (``@pytest.mark.trio`` or trio
mode). The session-scoped servers run in a helper thread's event loop, so any test, sync or
async, on any backend, can use them. Everything a fixture starts is stopped, and its
temporary files removed, when its scope ends.
"""

# The session-scoped servers behind pulse_server and pulse_cluster: pytest finds fixtures
# among the plugin module's attributes.
from ._plugin import _pulse_session_cluster as _pulse_session_cluster
from ._plugin import _pulse_session_server as _pulse_session_server
from ._plugin import pulse_client as pulse_client
from ._plugin import pulse_cluster as pulse_cluster
from ._plugin import pulse_cluster_client as pulse_cluster_client
from ._plugin import pulse_killable_server as pulse_killable_server
from ._plugin import pulse_name as pulse_name
from ._plugin import pulse_proxy as pulse_proxy
from ._plugin import pulse_server as pulse_server

__all__ = (
    "pulse_client",
    "pulse_cluster",
    "pulse_cluster_client",
    "pulse_killable_server",
    "pulse_name",
    "pulse_proxy",
    "pulse_server",
)
