"""Storage: the schema, the engine, and every query. The indexer writes, the app reads.

The one module that touches the index: ``schema`` (tables, blobs), ``engine`` (opening
it), ``records`` (what reads return, and a unit's typed statistics), ``explanations`` and
``kept`` (what units mean, and how that outlives a re-index), ``token_units`` (from tokens
to the units on them), ``upgrade`` (older indexes brought up to date), ``write`` (the
indexer's bulk inserts) and ``read`` (the app's queries), all imported from here.

Any SQLAlchemy URL works; a plain path means SQLite, and ``postgresql://`` URLs use
psycopg 3 (``pip install 'spyglass[postgres]'``). The indexer writes a whole index in one
transaction, so readers keep seeing the last complete index until it commits: SQLite in
WAL mode, PostgreSQL by MVCC. The server's engine (`make_read_engine`) refuses writes
and reads each request from one snapshot, so no page mixes an old index with a new one.
Arrays (token ids, activation windows) are stored as little-endian blobs.
"""

from spyglass.storage.engine import *  # noqa: F403
from spyglass.storage.explanations import *  # noqa: F403
from spyglass.storage.kept import *  # noqa: F403
from spyglass.storage.read import *  # noqa: F403
from spyglass.storage.records import *  # noqa: F403
from spyglass.storage.schema import *  # noqa: F403
from spyglass.storage.token_units import *  # noqa: F403
from spyglass.storage.upgrade import *  # noqa: F403
from spyglass.storage.write import *  # noqa: F403
