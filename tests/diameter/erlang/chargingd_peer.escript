#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%%
%% An independent Diameter Credit-Control client for chargingd's tests: OTP's own
%% `diameter` application (capabilities exchange, watchdog, encoding, decoding)
%% with the dictionary chargingd_ro.dia, compiled by the tests with diameterc.
%%
%% Driven on stdin by Erlang terms, one per command, and reporting on stdout as
%% one JSON object per line:
%%
%%   {start, OriginHost, Realm, DestRealm, Form}.      Form = plain | vsai
%%   {connect, Port, WatchdogMs}.                      -> {"event":"up"} | {"event":"down"}
%%   {ccr, Tag, SessionId, Type, Number, Props}.       -> {"tag":Tag,"result":..,"granted":..,
%%                                                         "decode_errors":"[]"}
%%        Props: [{calling,S}, {called,S}, {used,N}, {requested,N}, {rating_group,N},
%%                {aoc,N}, {rat_type,S}]  (AoC-Request-Type, 3GPP-RAT-Type: top level)
%%   {answer_with, asr | rar, ResultCode}.             how the next ASR/RAR are answered
%%   stop.
%%
%% Server requests are answered by the callbacks below and reported as
%% {"event":"asr"|"rar","session":Sid,"answered":Code}.

-module(chargingd_peer).
-mode(compile).

-export([main/1]).
-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

-define(SVC, chargingd_peer).

main([DictDir]) ->
    true = code:add_patha(DictDir),
    ok = diameter:start(),
    ets:new(peer_cfg, [named_table, public, set]),
    ets:insert(peer_cfg, [{asr, 2001}, {rar, 2001}]),
    emit([{event, <<"ready">>}]),
    loop().

loop() ->
    case io:read('') of
        eof ->
            halt(0);
        {ok, stop} ->
            catch diameter:stop_service(?SVC),
            emit([{event, <<"stopped">>}]),
            halt(0);
        {ok, Command} ->
            try command(Command)
            catch Class:Reason ->
                emit([{event, <<"error">>}, {reason, fmt({Class, Reason})}])
            end,
            loop();
        {error, Reason} ->
            emit([{event, <<"error">>}, {reason, fmt(Reason)}]),
            halt(2)
    end.

command({start, OriginHost, Realm, DestRealm, Form}) ->
    ets:insert(peer_cfg, [{origin, {OriginHost, Realm}}, {dest_realm, DestRealm}]),
    Apps = case Form of
               plain -> [{'Auth-Application-Id', [4]}];
               %% Capabilities take the record form (RFC 3588 dictionary:
               %% Vendor-Id is a list there), not a map.
               vsai -> [{'Vendor-Specific-Application-Id',
                         [{'diameter_base_Vendor-Specific-Application-Id',
                           [10415], [4], []}]}]
           end,
    ok = diameter:start_service(?SVC,
                                [{'Origin-Host', OriginHost},
                                 {'Origin-Realm', Realm},
                                 {'Host-IP-Address', [{127, 0, 0, 1}]},
                                 {'Vendor-Id', 0},
                                 {'Product-Name', "otp-diameter-peer"},
                                 {'Origin-State-Id', 7},
                                 {'Supported-Vendor-Id', [10415]},
                                 {decode_format, map},
                                 {string_decode, false},
                                 {strict_mbit, true},
                                 {application, [{alias, ro},
                                                {dictionary, chargingd_ro},
                                                {module, ?MODULE},
                                                {answer_errors, callback}]}
                                 | Apps]),
    emit([{event, <<"started">>}]);

command({connect, Port, WatchdogMs}) ->
    true = diameter:subscribe(?SVC),
    {ok, _Ref} = diameter:add_transport(?SVC,
                                        {connect,
                                         [{transport_module, diameter_tcp},
                                          {transport_config, [{raddr, {127, 0, 0, 1}},
                                                              {rport, Port},
                                                              {ip, {127, 0, 0, 1}}]},
                                          {watchdog_timer, WatchdogMs},
                                          {connect_timer, 30000}]}),
    wait_up();

command({ccr, Tag, SessionId, Type, Number, Props}) ->
    {OriginHost, Realm} = ets:lookup_element(peer_cfg, origin, 2),
    DestRealm = ets:lookup_element(peer_cfg, dest_realm, 2),
    Base = #{'Session-Id' => SessionId,
             'Origin-Host' => OriginHost,
             'Origin-Realm' => Realm,
             'Destination-Realm' => DestRealm,
             'Auth-Application-Id' => 4,
             'Service-Context-Id' => "32260@3gpp.org",
             'CC-Request-Type' => Type,
             'CC-Request-Number' => Number},
    Msg = ['CCR' | maps:merge(Base, ccr_avps(Props))],
    case diameter:call(?SVC, ro, Msg, [{timeout, 8000}]) of
        %% decode_errors: what OTP's decoder found wrong in the CCA (an AVP with the
        %% M bit that the CCA's grammar does not allow, a bad length, ...).
        {['CCA' | Answer], Errors} ->
            emit([{tag, Tag} | cca_fields(Answer)] ++ [{decode_errors, fmt(Errors)}]);
        {error, Reason} -> emit([{tag, Tag}, {error, fmt(Reason)}]);
        Other -> emit([{tag, Tag}, {error, fmt(Other)}])
    end;

command({answer_with, Which, Code}) ->
    ets:insert(peer_cfg, {Which, Code}),
    emit([{event, <<"answer_with">>}, {request, atom_to_binary(Which)}, {code, Code}]).

wait_up() ->
    receive
        #diameter_event{info = {up, _, _, _, _}} -> emit([{event, <<"up">>}]);
        #diameter_event{info = {up, _, _, _}} -> emit([{event, <<"up">>}]);
        #diameter_event{info = {closed, _, Reason, _}} ->
            emit([{event, <<"closed">>}, {reason, fmt(Reason)}]);
        #diameter_event{} -> wait_up()
    after 10000 ->
        emit([{event, <<"timeout">>}])
    end.

ccr_avps(Props) ->
    Subs = [#{'Subscription-Id-Type' => 0, 'Subscription-Id-Data' => V}
            || {calling, V} <- Props],
    Called = [#{'IMS-Information' => [#{'Called-Party-Address' => [V]}]}
              || {called, V} <- Props],
    %% CC-Time and/or CC-Total-Octets (used_octets, requested_octets) in one unit AVP.
    Unit = fun(Time, Octets) ->
                   maps:from_list([{'CC-Time', [N]} || {K, N} <- Props, K =:= Time]
                                  ++ [{'CC-Total-Octets', [N]} || {K, N} <- Props, K =:= Octets])
           end,
    Units = maps:from_list(
              [{'Used-Service-Unit', [Unit(used, used_octets)]}
               || lists:any(fun({K, _}) -> lists:member(K, [used, used_octets]) end, Props)]
              ++ [{'Requested-Service-Unit', [Unit(requested, requested_octets)]}
                  || lists:any(fun({K, _}) -> lists:member(K, [requested, requested_octets]) end,
                               Props)]
              ++ [{'Rating-Group', [N]} || {rating_group, N} <- Props]),
    Top = maps:from_list([{'AoC-Request-Type', [N]} || {aoc, N} <- Props]
                         ++ [{'3GPP-RAT-Type', [V]} || {rat_type, V} <- Props]),
    M0 = maps:merge(Top, #{'Subscription-Id' => Subs,
                           'Multiple-Services-Credit-Control' => [Units]}),
    case Called of
        [] -> M0;
        [SI] -> M0#{'Service-Information' => [SI]}
    end.

cca_fields(A) ->
    Mscc = case maps:get('Multiple-Services-Credit-Control', A, []) of
               [M | _] -> M;
               [] -> #{}
           end,
    Granted = case one(maps:get('Granted-Service-Unit', Mscc, [])) of
                  null -> null;
                  Gsu -> one(maps:get('CC-Time', Gsu, []))
              end,
    [{result, maps:get('Result-Code', A)},
     {request_number, maps:get('CC-Request-Number', A)},
     {mscc_result, one(maps:get('Result-Code', Mscc, []))},
     {rating_group, one(maps:get('Rating-Group', Mscc, []))},
     {granted, Granted},
     {validity, one(maps:get('Validity-Time', Mscc, []))},
     {fui, maps:get('Final-Unit-Indication', Mscc, []) =/= []},
     {fui_top, maps:get('Final-Unit-Indication', A, []) =/= []},
     {failure_handling, one(maps:get('Credit-Control-Failure-Handling', A, []))},
     {failed_avp, maps:get('Failed-AVP', A, []) =/= []}].

one([V | _]) -> V;
one([]) -> null;
one(V) -> V.

%% -- diameter_app callbacks ------------------------------------------------------

peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) ->
    emit([{event, <<"down">>}]),
    State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.
prepare_request(Packet, _Svc, _Peer) -> {send, Packet}.
prepare_retransmit(Packet, _Svc, _Peer) -> {send, Packet}.
handle_answer(#diameter_packet{msg = Msg, errors = Errors}, _Request, _Svc, _Peer) ->
    {Msg, Errors}.
handle_error(Reason, _Request, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{msg = [Name | Avps]}, _Svc, {_, Caps})
  when Name == 'ASR'; Name == 'RAR' ->
    #diameter_caps{origin_host = {OriginHost, _}, origin_realm = {Realm, _}} = Caps,
    Which = case Name of 'ASR' -> asr; 'RAR' -> rar end,
    Code = ets:lookup_element(peer_cfg, Which, 2),
    Sid = maps:get('Session-Id', Avps),
    emit([{event, atom_to_binary(Which)}, {session, Sid}, {answered, Code}]),
    Answer = case Name of 'ASR' -> 'ASA'; 'RAR' -> 'RAA' end,
    {reply, [Answer | #{'Session-Id' => Sid,
                        'Result-Code' => Code,
                        'Origin-Host' => OriginHost,
                        'Origin-Realm' => Realm}]};
handle_request(_Packet, _Svc, _Peer) ->
    {answer_message, 3001}.

%% -- JSON lines ----------------------------------------------------------------

emit(Fields) ->
    Body = lists:join(",", [[json(atom_to_binary(K)), ":", json(V)] || {K, V} <- Fields]),
    io:put_chars(standard_io, [${, Body, $}, $\n]).

json(null) -> "null";
json(true) -> "true";
json(false) -> "false";
json(N) when is_integer(N) -> integer_to_list(N);
json(B) when is_binary(B) -> [$", escape(binary_to_list(B)), $"];
json(S) when is_list(S) -> json(unicode:characters_to_binary(S));
json(A) when is_atom(A) -> json(atom_to_binary(A));
json(Other) -> json(fmt(Other)).

escape(S) -> [esc(C) || C <- S].
esc($") -> "\\\"";
esc($\\) -> "\\\\";
esc($\n) -> "\\n";
esc(C) when C < 32 -> io_lib:format("\\u~4.16.0B", [C]);
esc(C) -> C.

fmt(Term) -> unicode:characters_to_binary(io_lib:format("~0p", [Term])).
