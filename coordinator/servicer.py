"""The gRPC CoordinatorService servicer: unpacks messages, identifies the caller, delegates."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from coordinator import convert
from coordinator.batch import SendWatchdog
from coordinator.service import CoordinatorService
from node.servicer import bearer_token
from osmanthus.grpc_errors import servicer_method, stream_servicer_method
from osmanthus.tls import peer_identity
from osmanthus.v1 import coordinator_pb2, coordinator_pb2_grpc, lists_pb2


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    def __init__(self, service: CoordinatorService) -> None:
        self._service = service

    @servicer_method
    def RegisterKey(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.RegisterKeyRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.RegisterKeyResponse:
        fingerprint = self._service.register_key(
            request.public_key.n, caller=peer_identity(context), token=bearer_token(context)
        )
        return coordinator_pb2.RegisterKeyResponse(key_fingerprint=fingerprint)

    @servicer_method
    def PersonQuery(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.PersonQueryRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.QueryResponse:
        outcome = self._service.query(
            convert.person_query(request),
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        return convert.query_response(outcome)

    @servicer_method
    def EnterpriseQuery(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.EnterpriseQueryRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.QueryResponse:
        outcome = self._service.query(
            convert.enterprise_query(request),
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        return convert.query_response(outcome)

    @servicer_method
    def StatsQuery(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.StatsQueryRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.StatsResponse:
        outcome = self._service.stats(
            convert.stats_query(request),
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        return convert.stats_response(outcome)

    @stream_servicer_method
    def BatchQuery(  # noqa: N802 - gRPC method name
        self,
        request_iterator: Iterator[coordinator_pb2.BatchQueryRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[coordinator_pb2.BatchQueryResponse]:
        header = convert.batch_header(next(request_iterator, coordinator_pb2.BatchQueryRequest()))
        plan, outcomes = self._service.batch(
            header,
            convert.subject_chunks(request_iterator),
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        watchdog = SendWatchdog(context.cancel)
        try:
            with watchdog:
                yield convert.batch_layout(plan)
            for outcome in outcomes:
                message = convert.chunk_result(outcome)
                with watchdog:
                    yield message
        finally:
            # also when the client goes away mid-stream: the batch's place is freed
            outcomes.close()

    @servicer_method
    def SearchLists(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.SearchListsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.SearchListsResponse:
        outcome = self._service.search_lists(
            convert.search_lists(request),
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        return convert.search_lists_response(outcome)

    @servicer_method
    def ListChanges(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.ListChangesRequest, context: grpc.ServicerContext
    ) -> lists_pb2.ListChangesResponse:
        page = self._service.list_changes(
            convert.list_changes(request),
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        return convert.list_changes_response(page)

    @servicer_method
    def GrantConsent(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.GrantConsentRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.Consent:
        consent = self._service.grant_consent(
            subject_id=request.subject_id,
            grantee=request.grantee,
            purpose=request.purpose,
            expires_at=convert.datetime_from(request.expires_at, field="expires_at"),
            caller=peer_identity(context),
            token=bearer_token(context),
            subject_kind=convert.consent_subject_kind(request.subject_kind),
        )
        return convert.consent_message(consent)

    @servicer_method
    def RevokeConsent(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.Consent:
        consent = self._service.revoke_consent(
            request.consent_id, caller=peer_identity(context), token=bearer_token(context)
        )
        return convert.consent_message(consent)

    @servicer_method
    def ListConsents(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.ListConsentsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ListConsentsResponse:
        consents = self._service.list_consents(
            subject_id=request.subject_id,
            grantee=request.grantee,
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        return coordinator_pb2.ListConsentsResponse(
            consents=[convert.consent_message(c) for c in consents]
        )
