"""Benchmark pricing: the cost of finished workflow launches (genomics on AWS Batch, EBS, FSx for Lustre)
and of the platform's own Spark jobs (EMR on EC2, EMR Serverless).

``resources`` (usage values) -> ``collect`` (usage from the AWS APIs) -> ``prices`` / ``spot`` (unit
prices: Price List API or offline snapshot) -> ``costs`` (billing rules) -> ``launches`` (DynamoDB
records, conditional write-back) -> ``pricer`` (one launch end to end); ``jobs`` (EMR cost records),
``report`` (comparison CSV and chart), ``__main__`` (CLI).
"""
