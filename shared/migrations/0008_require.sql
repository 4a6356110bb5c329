-- A condition a single statement checks after its data-modifying CTEs: when it does not
-- hold, the statement fails with SQLSTATE IG001 and none of its writes happen. It lets a
-- statement that writes several tables with a condition (intake's credit reservation) be
-- atomic without a transaction around it.
CREATE OR REPLACE FUNCTION influgen_require(ok boolean, message text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION USING ERRCODE = 'IG001', MESSAGE = message;
    END IF;
    RETURN true;
END $$;
