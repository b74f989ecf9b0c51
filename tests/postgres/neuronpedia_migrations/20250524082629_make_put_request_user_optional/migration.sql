-- AlterTable
ALTER TABLE "GraphMetadataDataPutRequest" ALTER COLUMN "userId" DROP NOT NULL;
