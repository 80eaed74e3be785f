-- bench/wrk/login.lua - the login load of bench/login.sh: every request is
-- POST /login with the form body of a good password (env LOGIN_BODY to
-- change it), so every request costs the server one scrypt hash.
--
--   wrk -t1 -c8 -d15s --timeout 30s -s bench/wrk/login.lua http://127.0.0.1:PORT/login
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

wrk.method = "POST"
wrk.body = os.getenv("LOGIN_BODY") or "user=alice&password=wonderland"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
