%% savina: the Savina workloads of bench/savina/README.md in Erlang, the peer
%% that weft's actors are measured against.
%%
%%   erlc -o DIR bench/savina/erlang/savina.erl
%%   erl -noshell +P 4000000 -pa DIR -run savina main <workload>
%%
%% Each run times itself from the first spawn to the driver's completion
%% message (erlang:monotonic_time), checks its result and prints one line:
%%   RESULT savina.<workload> <value> <unit>
%% then halts with 0, or 1 when a check fails (2 on bad usage). The driver
%% is the process that runs main/1.
%%
%% SAVINA_SCALE=k divides every size by k (quick checks only; the table uses
%% 1). SAVINA_CHECK_OFFBY=1 adds one to every expected value, so that each
%% workload's check must fail: that is how the checks were seen to fail.
-module(savina).
-export([main/1]).

-define(THETA, 37.2).

main([Workload]) ->
    Runs = [{"pingpong", fun pingpong/0}, {"counting", fun counting/0},
            {"threadring", fun threadring/0},
            {"fjthroughput", fun fjthroughput/0},
            {"fjcreation", fun fjcreation/0}, {"big", fun big/0},
            {"chameneos", fun chameneos/0}, {"idle", fun idle/0}],
    case lists:keyfind(Workload, 1, Runs) of
        {_, Run} ->
            io:format(standard_error, "erlang ~s: ~p schedulers (~p online), "
                      "message_queue_data ~p~n",
                      [Workload, erlang:system_info(schedulers),
                       erlang:system_info(schedulers_online),
                       element(2, erlang:process_info(
                                    self(), message_queue_data))]),
            halt(Run());
        false ->
            io:format(standard_error, "savina: unknown workload ~s~n",
                      [Workload]),
            halt(2)
    end;
main(_) ->
    io:format(standard_error, "usage: erl -noshell -run savina main "
              "<workload>~n", []),
    halt(2).

%% -- helpers ---------------------------------------------------------------

env_int(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        S -> list_to_integer(S)
    end.

sized(N) -> max(1, N div max(1, env_int("SAVINA_SCALE", 1))).

offby() -> env_int("SAVINA_CHECK_OFFBY", 0).

now_us() -> erlang:monotonic_time(microsecond).

%% Check Got == Want (Want already includes the off-by), print the result.
finish(Name, What, Got, Want, T0) ->
    Ms = (now_us() - T0) / 1000.0,
    check(Name, What, Got, Want,
          fun() -> io:format("RESULT savina.~s ~.1f ms~n", [Name, Ms]) end).

check(_Name, _What, Same, Same, Print) ->
    Print(),
    0;
check(Name, What, Got, Want, _Print) ->
    io:format(standard_error, "savina: ~s: ~s: got ~p, expected ~p~n",
              [Name, What, Got, Want]),
    1.

%% Savina's performComputation(theta): sin(theta)^2, which must be positive
%% (the check defeats dead-code elimination). Theta comes in the message so
%% that the compiler cannot fold it.
perform_computation(Theta) ->
    S = math:sin(Theta),
    R = S * S,
    if R =< 0 -> erlang:error({unrealistic_res, R});
       true -> R
    end.

collect(_Tag, 0, Acc) -> Acc;
collect(Tag, K, Acc) ->
    receive {Tag, X} -> collect(Tag, K - 1, Acc + X) end.

%% -- pingpong --------------------------------------------------------------
%% Savina PingPong: ping sends ping to pong, pong answers pong; on pong, ping
%% sends itself a ping message (Savina's PingMessage) which sends the next
%% ping; after N round trips ping stops pong, which reports its count.

pingpong() ->
    N = sized(1000000),
    Driver = self(),
    T0 = now_us(),
    Pong = spawn(fun() -> pong_loop(0, Driver) end),
    Ping = spawn(fun() -> ping_loop(N, Pong) end),
    Ping ! start,
    Got = receive {done, C} -> C end,
    finish("pingpong", "pings answered", Got, N + offby(), T0).

pong_loop(Count, Driver) ->
    receive
        {ping, From} -> From ! pong, pong_loop(Count + 1, Driver);
        stop -> Driver ! {done, Count}
    end.

ping_loop(Left, Pong) ->
    receive
        start -> Pong ! {ping, self()}, ping_loop(Left - 1, Pong);
        selfping -> Pong ! {ping, self()}, ping_loop(Left - 1, Pong);
        pong when Left > 0 -> self() ! selfping, ping_loop(Left, Pong);
        pong -> Pong ! stop
    end.

%% -- counting --------------------------------------------------------------
%% Savina Counting: the producer sends N increments to the counter, then asks
%% for the count, and tells the driver, which checks it.

counting() ->
    N = sized(2000000),
    Driver = self(),
    T0 = now_us(),
    Counter = spawn(fun() -> counter_loop(0) end),
    Producer = spawn(fun() -> producer(N, Counter, Driver) end),
    Producer ! start,
    Got = receive {done, C} -> C end,
    finish("counting", "count", Got, N + offby(), T0).

counter_loop(Count) ->
    receive
        inc -> counter_loop(Count + 1);
        {get, From} -> From ! {count, Count}
    end.

producer(N, Counter, Driver) ->
    receive start -> ok end,
    send_n(Counter, inc, N),
    Counter ! {get, self()},
    receive {count, C} -> Driver ! {done, C} end.

send_n(_To, _Msg, 0) -> ok;
send_n(To, Msg, K) -> To ! Msg, send_n(To, Msg, K - 1).

%% -- threadring ------------------------------------------------------------
%% Savina ThreadRing: 500 actors in a ring; a token carrying the hops left
%% goes round; the actor that receives it at 0 sends an exit message round
%% the ring, each actor reports how many tokens it saw and ends. The driver
%% checks that the reports sum to hops + 1 (the token's receipts).

threadring() ->
    Ring = 500,
    Hops = sized(2000000),
    Driver = self(),
    T0 = now_us(),
    Pids = [spawn(fun() -> ring_start(Driver) end) || _ <- lists:seq(1, Ring)],
    Nexts = tl(Pids) ++ [hd(Pids)],
    lists:foreach(fun({P, Next}) -> P ! {next, Next, Ring} end,
                  lists:zip(Pids, Nexts)),
    hd(Pids) ! {token, Hops},
    Sum = collect(done, Ring, 0),
    finish("threadring", "token receipts", Sum, Hops + 1 + offby(), T0).

ring_start(Driver) ->
    receive {next, Next, Ring} -> ring_loop(Next, Ring, 0, Driver) end.

ring_loop(Next, Ring, Seen, Driver) ->
    receive
        {token, 0} ->
            Next ! {exit, Ring - 1},
            ring_loop(Next, Ring, Seen + 1, Driver);
        {token, Left} ->
            Next ! {token, Left - 1},
            ring_loop(Next, Ring, Seen + 1, Driver);
        {exit, Left} ->
            Driver ! {done, Seen},
            if Left > 0 -> Next ! {exit, Left - 1};
               true -> ok
            end
    end.

%% -- fjthroughput ----------------------------------------------------------
%% Savina Fork-Join throughput: A actors, the driver sends each N messages,
%% round-robin; each message does performComputation(37.2); an actor that
%% has processed N tells the driver (its count) and ends.

fjthroughput() ->
    A = 60,
    N = sized(100000),
    Driver = self(),
    T0 = now_us(),
    Ws = [spawn(fun() -> fj_worker(N, 0, Driver) end) || _ <- lists:seq(1, A)],
    fj_send_rounds(Ws, N, ?THETA),
    Total = collect(done, A, 0),
    finish("fjthroughput", "messages processed", Total, A * N + offby(), T0).

fj_send_rounds(_Ws, 0, _Theta) -> ok;
fj_send_rounds(Ws, M, Theta) ->
    lists:foreach(fun(W) -> W ! {work, Theta} end, Ws),
    fj_send_rounds(Ws, M - 1, Theta).

fj_worker(N, Count, Driver) ->
    receive
        {work, Theta} ->
            perform_computation(Theta),
            case Count + 1 of
                N -> Driver ! {done, N};
                C -> fj_worker(N, C, Driver)
            end
    end.

%% -- fjcreation ------------------------------------------------------------
%% Savina Fork-Join creation: N actors, each created and sent one message
%% that does performComputation(37.2), then it ends. Savina waits for the
%% actors' termination; here each answers the driver before ending and the
%% driver counts the answers.

fjcreation() ->
    N = sized(200000),
    Driver = self(),
    T0 = now_us(),
    fj_create(N, Driver, ?THETA),
    Got = collect(done, N, 0),
    finish("fjcreation", "answers", Got, N + offby(), T0).

fj_create(0, _Driver, _Theta) -> ok;
fj_create(K, Driver, Theta) ->
    P = spawn(fun() -> fj_once(Driver) end),
    P ! {work, Theta},
    fj_create(K - 1, Driver, Theta).

fj_once(Driver) ->
    receive {work, Theta} -> perform_computation(Theta), Driver ! {done, 1} end.

%% -- big -------------------------------------------------------------------
%% Savina Big: W actors; each sends N pings, one at a time, to neighbours
%% picked by Savina's PseudoRandom seeded with the actor's index; each ping
%% is answered with a pong, the next ping goes on the pong. An actor done
%% with its N pings tells the sink (with its count of pongs that came from
%% an unexpected actor); when all W have, the sink tells the driver and stops
%% them.

big() ->
    W = 120,
    N = sized(20000),
    Driver = self(),
    T0 = now_us(),
    Sink = spawn(fun() -> sink_start(W, Driver) end),
    Pids = [spawn(fun() -> big_start(I, N, Sink) end)
            || I <- lists:seq(0, W - 1)],
    Peers = list_to_tuple(Pids),
    Sink ! {neighbours, Peers},
    [P ! {neighbours, Peers} || P <- Pids],
    [P ! {pong, -1} || P <- Pids],
    {Pings, Wrong} = receive {done, Ps, Wr} -> {Ps, Wr} end,
    case check("big", "pongs from an unexpected actor", Wrong, offby(),
               fun() -> ok end) of
        0 -> finish("big", "pings", Pings, W * N, T0);
        Rc -> Rc
    end.

big_start(Id, N, Sink) ->
    receive {neighbours, Peers} -> big_loop(Id, N, Sink, Peers, 0, -1, 0, Id)
    end.

big_loop(Id, N, Sink, Peers, Pings, Expected, Wrong, Rnd) ->
    receive
        {ping, From} ->
            element(From + 1, Peers) ! {pong, Id},
            big_loop(Id, N, Sink, Peers, Pings, Expected, Wrong, Rnd);
        {pong, From} ->
            Wrong1 = if From =:= Expected -> Wrong; true -> Wrong + 1 end,
            if Pings =:= N ->
                    Sink ! {done, Pings, Wrong1},
                    big_loop(Id, N, Sink, Peers, Pings, Expected, Wrong1, Rnd);
               true ->
                    %% Savina's PseudoRandom: nextLong, then nextInt(n) = % n.
                    Rnd1 = (Rnd * 1309 + 13849) band 65535,
                    Target = Rnd1 rem tuple_size(Peers),
                    element(Target + 1, Peers) ! {ping, Id},
                    big_loop(Id, N, Sink, Peers, Pings + 1, Target, Wrong1,
                             Rnd1)
            end;
        exit ->
            ok
    end.

sink_start(W, Driver) ->
    receive {neighbours, Peers} -> sink_loop(W, Driver, Peers, 0, 0, 0) end.

sink_loop(W, Driver, Peers, Finished, Pings, Wrong) ->
    receive
        {done, P, Wr} ->
            case Finished + 1 of
                W ->
                    [B ! exit || B <- tuple_to_list(Peers)],
                    Driver ! {done, Pings + P, Wrong + Wr};
                F ->
                    sink_loop(W, Driver, Peers, F, Pings + P, Wrong + Wr)
            end
    end.

%% -- chameneos -------------------------------------------------------------
%% Savina Chameneos: a mall and C chameneos of colours i rem 3; each chameneo
%% asks the mall to meet; the mall pairs two waiting ones by forwarding the
%% second's request to the first, which takes the complement colour, tells
%% the other (change) and both ask again; after M meetings the mall answers
%% every request with exit, and each chameneo reports its meetings and ends.
%% The driver checks that they sum to 2 * M.

chameneos() ->
    C = 100,
    M = sized(200000),
    Driver = self(),
    T0 = now_us(),
    spawn(fun() -> mall_start(M, C, Driver) end),
    Sum = receive {done, S} -> S end,
    finish("chameneos", "meetings", Sum, 2 * M + offby(), T0).

%% Colours 0 red, 1 yellow, 2 blue, 3 faded (Savina's ChameneosHelper).
complement(3, _) -> 3;
complement(_, 3) -> 3;
complement(Same, Same) -> Same;
complement(A, B) -> 3 - A - B.

mall_start(M, C, Driver) ->
    Mall = self(),
    [spawn(fun() -> chameneo_start(Mall, I rem 3) end)
     || I <- lists:seq(0, C - 1)],
    mall_loop(M, none, 0, 0, C, Driver).

mall_loop(Left, Waiting, Sum, Faded, C, Driver) ->
    receive
        {meet, Colour, From} ->
            if Left > 0, Waiting =:= none ->
                    mall_loop(Left, From, Sum, Faded, C, Driver);
               Left > 0 ->
                    Waiting ! {meet, Colour, From},
                    mall_loop(Left - 1, none, Sum, Faded, C, Driver);
               true ->
                    From ! exit,
                    mall_loop(Left, Waiting, Sum, Faded, C, Driver)
            end;
        {count, Meetings} ->
            case Faded + 1 of
                C -> Driver ! {done, Sum + Meetings};
                F -> mall_loop(Left, Waiting, Sum + Meetings, F, C, Driver)
            end
    end.

chameneo_start(Mall, Colour) ->
    Mall ! {meet, Colour, self()},
    chameneo_loop(Mall, Colour, 0).

chameneo_loop(Mall, Colour, Meetings) ->
    receive
        {meet, Other, From} ->
            C2 = complement(Colour, Other),
            From ! {change, C2},
            Mall ! {meet, C2, self()},
            chameneo_loop(Mall, C2, Meetings + 1);
        {change, C2} ->
            Mall ! {meet, C2, self()},
            chameneo_loop(Mall, C2, Meetings + 1);
        exit ->
            Mall ! {count, Meetings}
    end.

%% -- idle ------------------------------------------------------------------
%% Memory per idle actor: RSS (from /proc/self/statm) before and after
%% spawning N processes that only wait; each is sent one message and answers
%% it before the second reading, so every process has started and run once.
%% The driver's list of pids (16 bytes a cell) is included.

rss_bytes(PageSize) ->
    {ok, Bin} = file:read_file("/proc/self/statm"),
    [_Size, Resident | _] = string:lexemes(binary_to_list(Bin), " \n"),
    list_to_integer(Resident) * PageSize.

idle() ->
    N = sized(1000000),
    Limit = erlang:system_info(process_limit),
    if Limit < N + 1000 ->
            io:format(standard_error, "savina: idle: process limit ~p is too "
                      "low for ~p processes: run erl with +P 4000000~n",
                      [Limit, N]),
            1;
       true ->
            idle(N)
    end.

idle(N) ->
    PageSize = list_to_integer(string:trim(os:cmd("getconf PAGESIZE"))),
    Driver = self(),
    Before = rss_bytes(PageSize),
    Pids = idle_spawn(N, Driver, []),
    Got = collect(pong, N, 0),
    After = rss_bytes(PageSize),
    io:format(standard_error, "idle: ~p processes (~p in the list), RSS ~p -> "
              "~p bytes~n", [N, length(Pids), Before, After]),
    check("idle", "answers", Got, N + offby(),
          fun() -> io:format("RESULT savina.idle ~B B/actor~n",
                             [round((After - Before) / N)])
          end).

idle_spawn(0, _Driver, Acc) -> Acc;
idle_spawn(K, Driver, Acc) ->
    P = spawn(fun() -> idle_wait(Driver) end),
    P ! ping,
    idle_spawn(K - 1, Driver, [P | Acc]).

idle_wait(Driver) ->
    receive ping -> Driver ! {pong, 1} end,
    receive stop -> ok end.
