-- 016: the stored CDRs by the CUCM call legs they name (extra orig_leg / dest_leg:
-- origLegCallIdentifier, destLegIdentifier, unique in a cluster). A conference's bridge
-- legs are written when it ends, often files after the original and setup calls that
-- brought its participants in: mediation asks which stored call had a bridge leg's
-- participant leg as its called leg (who called the participant pays for its time on
-- the bridge) or as its calling leg (its own call: nothing to bill). Only CDRs that
-- name a leg are in them.
CREATE INDEX cdrs_dest_leg ON cdrs ((extra ->> 'dest_leg')) WHERE extra ? 'dest_leg';
CREATE INDEX cdrs_orig_leg ON cdrs ((extra ->> 'orig_leg')) WHERE extra ? 'orig_leg';
