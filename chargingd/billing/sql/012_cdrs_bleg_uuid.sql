-- 012: the stored CDRs by the B-leg they name (extra bleg_uuid: FreeSWITCH cdr_csv,
-- json_cdr and xml_cdr A-legs). A FreeSWITCH cdr_csv file written with legs = "ab"
-- holds both legs of a bridged call; when the file was rotated between the two legs'
-- hang-ups, the B-leg's line is in another file than its A-leg's: mediation asks which
-- of a file's lone lines a stored A-leg names, to skip them (never billing the call
-- twice, however often a file is imported again). Only CDRs that name a B-leg are in it.
-- On the uuid alone (billing/lookup.py naming looks each uuid up): with source first,
-- a batch's thousand uuids scanned every row of the source.
CREATE INDEX cdrs_bleg_uuid ON cdrs ((extra ->> 'bleg_uuid')) WHERE extra ? 'bleg_uuid';
