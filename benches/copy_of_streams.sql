-- A copy of es.streams for the hand-written sides of W1h and W15l (benches/run.sh,
-- benches/instructions.sh): the table named by the psql variable `tbl`, made `LIKE es.streams
-- INCLUDING ALL`, with es.streams' storage parameters (its fillfactor: a copy at the default would
-- pack its rows tighter than the store's), every row, vacuumed and analysed.
-- usage: psql -v tbl=bench.raw_streams -f benches/copy_of_streams.sql
CREATE TABLE :tbl (LIKE es.streams INCLUDING ALL);
SELECT format('ALTER TABLE %s SET (%s)', :'tbl', array_to_string(reloptions, ', '))
  FROM pg_class WHERE oid = 'es.streams'::regclass AND reloptions IS NOT NULL \gexec
INSERT INTO :tbl SELECT * FROM es.streams;
VACUUM ANALYZE :tbl;
