"""The gRPC CoordinatorService servicer: unpack, hand over with the caller, pack."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from coordinator.batch import SendWatchdog
from coordinator.service import CoordinatorService
from osmanthus.core.grpc_errors import servicer_method, stream_servicer_method
from osmanthus.core.server import current_caller
from osmanthus.core.wire import coordinator as wire
from osmanthus.core.wire.cases import file_case_request_from_proto, receipt_to_proto
from osmanthus.core.wire.lists import list_changes_page_to_proto
from osmanthus.v1 import cases_pb2, coordinator_pb2, coordinator_pb2_grpc, lists_pb2


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    def __init__(self, service: CoordinatorService) -> None:
        self._service = service

    @servicer_method
    def RegisterKey(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.RegisterKeyRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.RegisterKeyResponse:
        caller = current_caller()
        fingerprint = self._service.register_key(
            request.public_key.n,
            modulus_proof=request.public_key.modulus_proof,
            caller=caller.peer,
            token=caller.token,
        )
        return coordinator_pb2.RegisterKeyResponse(key_fingerprint=fingerprint)

    @servicer_method
    def PersonQuery(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.PersonQueryRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.QueryResponse:
        caller = current_caller()
        outcome = self._service.query(
            wire.person_query_from_proto(request, limits=self._service.request_limits),
            caller=caller.peer,
            token=caller.token,
        )
        return wire.query_outcome_to_proto(outcome)

    @servicer_method
    def EnterpriseQuery(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.EnterpriseQueryRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.QueryResponse:
        caller = current_caller()
        outcome = self._service.query(
            wire.enterprise_query_from_proto(request, limits=self._service.request_limits),
            caller=caller.peer,
            token=caller.token,
        )
        return wire.query_outcome_to_proto(outcome)

    @servicer_method
    def StatsQuery(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.StatsQueryRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.StatsResponse:
        caller = current_caller()
        outcome = self._service.stats(
            wire.stats_query_from_proto(request, limits=self._service.request_limits),
            caller=caller.peer,
            token=caller.token,
        )
        return wire.stats_outcome_to_proto(outcome)

    @stream_servicer_method
    def BatchQuery(  # noqa: N802 - gRPC method name
        self,
        request_iterator: Iterator[coordinator_pb2.BatchQueryRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[coordinator_pb2.BatchQueryResponse]:
        caller = current_caller()
        header = wire.batch_header_from_proto(
            next(request_iterator, coordinator_pb2.BatchQueryRequest())
        )
        plan, outcomes = self._service.batch(
            header,
            wire.subject_chunks_from_proto(request_iterator),
            caller=caller.peer,
            token=caller.token,
        )
        watchdog = SendWatchdog(context.cancel)
        try:
            with watchdog:
                yield wire.batch_plan_to_proto(plan)
            for outcome in outcomes:
                message = wire.chunk_outcome_to_proto(outcome)
                with watchdog:
                    yield message
        finally:
            # also when the client goes away mid-stream: the batch's place is freed
            outcomes.close()

    @servicer_method
    def SearchLists(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.SearchListsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.SearchListsResponse:
        caller = current_caller()
        outcome = self._service.search_lists(
            wire.list_search_from_proto(request),
            caller=caller.peer,
            token=caller.token,
        )
        return wire.list_search_outcome_to_proto(outcome)

    @servicer_method
    def ListChanges(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.ListChangesRequest, context: grpc.ServicerContext
    ) -> lists_pb2.ListChangesResponse:
        caller = current_caller()
        page = self._service.list_changes(
            wire.changes_request_from_proto(request),
            caller=caller.peer,
            token=caller.token,
        )
        return list_changes_page_to_proto(page)

    @servicer_method
    def GrantConsent(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.GrantConsentRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.Consent:
        caller = current_caller()
        grant = wire.consent_grant_from_proto(request)
        consent = self._service.grant_consent(
            subject_id=grant.subject_id,
            grantee=grant.grantee,
            purpose=grant.purpose,
            expires_at=grant.expires_at,
            caller=caller.peer,
            token=caller.token,
            subject_kind=grant.subject_kind,
        )
        return wire.consent_to_proto(consent)

    @servicer_method
    def RevokeConsent(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.Consent:
        caller = current_caller()
        consent = self._service.revoke_consent(
            request.consent_id,
            caller=caller.peer,
            token=caller.token,
            subject_id=request.subject_id,
        )
        return wire.consent_to_proto(consent)

    @servicer_method
    def ListConsents(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.ListConsentsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ListConsentsResponse:
        caller = current_caller()
        consents = self._service.list_consents(
            subject_id=request.subject_id,
            grantee=request.grantee,
            caller=caller.peer,
            token=caller.token,
        )
        return wire.consents_to_proto(consents)

    @servicer_method
    def SubjectFile(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.SubjectFileRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.SubjectFileResponse:
        caller = current_caller()
        outcome = self._service.subject_file(
            wire.subject_file_request_from_proto(request),
            caller=caller.peer,
            token=caller.token,
        )
        return wire.subject_file_outcome_to_proto(outcome)

    @servicer_method
    def FileCase(  # noqa: N802 - gRPC method name
        self, request: cases_pb2.FileCaseRequest, context: grpc.ServicerContext
    ) -> cases_pb2.CaseReceipt:
        caller = current_caller()
        receipt = self._service.file_case(
            file_case_request_from_proto(request),
            caller=caller.peer,
            token=caller.token,
        )
        return receipt_to_proto(receipt)
